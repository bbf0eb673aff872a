"""`fisherlab demo`: the whole loop on the offline testbed — world, sweep, report.

A preset of the sweep (plan -> run -> report): builds (or reuses) the synthetic
multilingual testbed, plans ``methods`` x ``seeds`` runs with the tr(F) probe on
(:func:`fisherlab.sweep.plan_sweep`), runs them (:func:`fisherlab.sweep.run_sweep`:
finished runs reused, one progress bar with a status line per run, full logs in each
run's ``train.log``) and writes the ``fisherlab analyze`` report of those runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fisherlab.spec.methods import DEFAULT_METHODS, get_method

__all__ = ["DEFAULT_METHODS", "DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its runs and report, and the per-run status."""

    runs_dir: Path
    report_dir: Path
    runs: dict[str, str]  # run name -> "trained" | "reused"


def run_demo(out: str | Path = "fisherlab-demo", *, world: str = "default", methods: Sequence[str] = DEFAULT_METHODS,
             seeds: Sequence[int] = (0, 1), steps: int | None = None, k: int | None = None,
             probe_every: int = 20, probe_batches: int = 8, threads: int = 1, progress: bool = True,
             verbose: bool = False, testbed_dir: str | Path | None = None,
             report_options: dict[str, Any] | None = None) -> DemoResult:
    """Build the testbed, train ``methods`` x ``seeds`` runs into ``out/runs``, report into ``out/report``.

    ``steps``/``k`` default to the world's recommended task budget and
    ``k = steps // (4 * layers)``, so unfreezing ends in the first quarter of
    training (kL << N, as in Algorithm 1). ``testbed_dir``: where the world is
    built or reused (default: the user cache, keyed by the world's hash). ``verbose``:
    every run's full Trainer output on the console instead of its ``train.log``.
    A run that fails raises (the demo is not a sweep that goes on).
    """
    import torch

    from fisherlab.config import ConfigError, parse_config
    from fisherlab.report import build_report
    from fisherlab.sweep import count_layers, plan_sweep, run_sweep
    from fisherlab.tasks.testbed import TestbedTask

    for method in methods:
        get_method(method)  # validate names before any work
    if not seeds:
        raise ValueError("demo: seeds is empty")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if testbed_dir is not None:
            from fisherlab.testbed import build_testbed, world_config

            build_testbed(world_config(world), testbed_dir, progress=progress)
            task = TestbedTask(testbed_dir)
        else:
            task = TestbedTask(world=world, progress=progress)
        budget = task.training_defaults()
        steps = steps or budget["steps"]
        out = Path(out)
        runs_dir, report_dir = out / "runs", out / "report"
        base = {
            "task": "testbed", "task_options": json.dumps({"path": str(task.testbed.root)}),
            "max_steps": steps, "per_device_train_batch_size": budget["batch_size"], "learning_rate": budget["lr"],
            "lr_scheduler_type": "constant", "max_grad_norm": 1.0,
            "eval_strategy": "steps", "eval_steps": probe_every, "logging_steps": probe_every,
            "save_strategy": "no", "probe_every": probe_every, "probe_batches": probe_batches,
            "use_cpu": not torch.cuda.is_available(), "dataloader_num_workers": 0,
            # quiet console: the Trainer prints its log dicts (into train.log); verbose: the old stream
            "disable_tqdm": not (progress and verbose), "progress": progress,
        }
        if k is None:
            layers = count_layers(parse_config(None, overrides={**base, "run_dir": str(runs_dir / "_base")}))
            k = max(1, steps // (4 * layers))
        plan = plan_sweep(None, (), methods=methods, seeds=seeds, k=k, out=runs_dir, overrides=base)
        result = run_sweep(plan, progress=progress, verbose=verbose)
    finally:  # the caller's thread count is not ours to keep
        torch.set_num_threads(previous_threads)
    if result.failed:
        errors = "; ".join(f"{r['name']}: {r['error']}" for r in result.records if r["status"] == "failed")
        raise ConfigError(f"demo: {len(result.failed)} run(s) failed ({errors}); see each run's train.log")
    build_report([runs_dir], report_dir, **{"progress": progress, **(report_options or {})})
    return DemoResult(runs_dir=runs_dir, report_dir=report_dir, runs=result.statuses)
