"""`fisherlab demo`: the whole loop on the offline testbed — world, runs, report.

Builds (or reuses) the synthetic multilingual testbed, trains task adapters with
several unfreezing methods over a few seeds (each a normal ``fisherlab train``
run with the tr(F) probe on), then writes the ``fisherlab analyze`` report of
those runs. Finished runs are reused, so an interrupted demo continues where it
stopped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_METHODS = ("standard", "gradual", "fisher")


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its runs and report, and the per-run status."""

    runs_dir: Path
    report_dir: Path
    runs: dict[str, str]  # run name -> "trained" | "reused"


def method_strategy(method: str, k: int, seed: int, probe_batches: int) -> str:
    """The strategy string of a demo method (``standard``, ``gradual``, ``fisher``, ``random``, ``lpft``, ``reverse``)."""
    strings = {
        "standard": "standard",
        "gradual": f"gradual:k={k}",
        "reverse": f"reverse:k={k}",
        "lpft": f"lpft:k={k}",
        "random": f"random:k={k};seed={seed}",
        "fisher": f"fisher:k={k};n_batches={probe_batches};seed={seed}",
    }
    if method not in strings:
        raise ValueError(f"demo: unknown method {method!r}; expected some of {sorted(strings)}")
    return strings[method]


def _completed(run_dir: Path) -> bool:
    from fisherlab.runs import peek_run_json

    return (peek_run_json(run_dir) or {}).get("status") == "completed"


def run_demo(out: str | Path = "fisherlab-demo", *, world: str = "default", methods: Sequence[str] = DEFAULT_METHODS,
             seeds: Sequence[int] = (0, 1), steps: int | None = None, k: int | None = None,
             probe_every: int = 20, probe_batches: int = 8, threads: int = 1, progress: bool = True,
             testbed_dir: str | Path | None = None, report_options: dict[str, Any] | None = None) -> DemoResult:
    """Build the testbed, train ``methods`` x ``seeds`` runs into ``out/runs``, report into ``out/report``.

    ``steps``/``k`` default to the world's recommended task budget and
    ``k = steps // (4 * layers)``, so unfreezing ends in the first quarter of
    training (kL << N, as in Algorithm 1). ``testbed_dir``: where the world is
    built or reused (default: the user cache, keyed by the world's hash).
    """
    import torch

    from fisherlab.report import build_report
    from fisherlab.tasks.testbed import TestbedTask
    from fisherlab.train import parse_config, run_training

    for method in methods:
        method_strategy(method, 1, 0, 1)  # validate names before any work
    if not seeds:
        raise ValueError("demo: seeds is empty")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if testbed_dir is not None:
            from fisherlab.testbed import build_testbed, world_config

            build_testbed(world_config(world), testbed_dir, threads=threads, progress=progress)
            task = TestbedTask(testbed_dir)
        else:
            task = TestbedTask(world=world, threads=threads, progress=progress)
        budget = task.training_defaults()
        steps = steps or budget["steps"]
        layers = json.loads((Path(task.testbed.base_dir) / "config.json").read_text())["num_hidden_layers"]
        k = k or max(1, steps // (4 * layers))
        out = Path(out)
        runs_dir, report_dir = out / "runs", out / "report"
        status: dict[str, str] = {}
        for method in methods:
            for seed in seeds:
                name = f"{method}-s{seed}"
                run_dir = runs_dir / name
                if _completed(run_dir):
                    status[name] = "reused"
                    continue
                overrides = {
                    "task": "testbed", "task_options": json.dumps({"path": str(task.testbed.root)}),
                    "strategy": method_strategy(method, k, seed, probe_batches), "method": method,
                    "run_dir": str(run_dir), "overwrite": True, "seed": seed, "max_steps": steps,
                    "per_device_train_batch_size": budget["batch_size"], "learning_rate": budget["lr"],
                    "lr_scheduler_type": "constant", "max_grad_norm": 1.0,
                    "eval_strategy": "steps", "eval_steps": probe_every, "logging_steps": probe_every,
                    "save_strategy": "no", "probe_every": probe_every, "probe_batches": probe_batches,
                    "use_cpu": not torch.cuda.is_available(), "disable_tqdm": not progress, "progress": progress,
                    "dataloader_num_workers": 0,
                }
                run_training(parse_config(None, overrides=overrides))
                status[name] = "trained"
    finally:  # the caller's thread count is not ours to keep
        torch.set_num_threads(previous_threads)
    build_report([runs_dir], report_dir, **{"progress": progress, **(report_options or {})})
    return DemoResult(runs_dir=runs_dir, report_dir=report_dir, runs=status)
