"""Running a sweep plan: locally (one run after the other, or ``jobs`` at once) or on SLURM (``submitit``).

``run_sweep`` executes a plan from :mod:`fisherlab.sweep.plan`: locally, one
``fisherlab.train.run_training`` after the other (finished runs reused, interrupted ones
resumed, a failing run recorded and skipped), or one ``submitit`` job per run. The sweep
directory gets a ``sweep.json`` manifest listing every planned run and its status. Locally
the console shows one progress bar over the runs and one status line per run
(:mod:`fisherlab.sweep.console`); each run's full output goes to ``RUN_DIR/train.log``
(``verbose=True``: the Trainer's own stream instead).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fisherlab.config import ConfigError
from fisherlab.sweep.plan import PlannedRun, SweepResult, format_plan

__all__ = ["MANIFEST", "execute_planned", "parse_slurm_options", "run_sweep"]

MANIFEST = "sweep.json"


def _run_info(run_dir: Path) -> dict[str, Any] | None:
    from fisherlab.runs import peek_run_json

    return peek_run_json(run_dir)


def _check_existing(plan: Sequence[PlannedRun]) -> None:
    """An existing run directory must hold the run planned there (same strategy and seed)."""
    for run in plan:
        info = _run_info(run.run_dir)
        if not info:
            continue
        config = info.get("config") or {}
        found = {"strategy": config.get("strategy"), "seed": config.get("seed")}
        if found["strategy"] is None and found["seed"] is None:
            continue
        if found["strategy"] != run.strategy or found["seed"] != run.seed:
            raise ConfigError(f"run_dir: {str(run.run_dir)!r} holds a different run ({found}) than the sweep plans "
                              f"(strategy {run.strategy!r}, seed {run.seed}); choose another --out")


def is_completed(run: PlannedRun) -> bool:
    """Whether ``run``'s directory already holds its completed run (a sweep reuses it)."""
    info = _run_info(run.run_dir)
    return info is not None and info.get("status") == "completed"


def execute_planned(run: PlannedRun, extra_callbacks: Sequence[Any] = ()) -> str:
    """Train one planned run: ``reused`` if complete, else resume (checkpoint) or start over; ``trained``."""
    from fisherlab import train

    if is_completed(run):
        return "reused"
    info = _run_info(run.run_dir)
    if info is not None and train.last_checkpoint(run.run_dir) is not None:
        config = run.parse(resume=True)
    else:
        config = run.parse(overwrite=info is not None)
    if extra_callbacks:
        train.run_training(config, extra_callbacks=list(extra_callbacks))
    else:
        train.run_training(config)
    return "trained"


def _manifest(plan: Sequence[PlannedRun], records: list[dict[str, Any]], executor: str, started: str) -> dict:
    from fisherlab.runs.writer import utc_now

    first = plan[0]
    return {"format": 1, "executor": executor, "started": started, "updated": utc_now(),
            "config_file": first.config_file, "args": list(first.args), "runs": records}


def _record(run: PlannedRun, status: str) -> dict[str, Any]:
    return {"name": run.name, "run_dir": str(run.run_dir), "method": run.method, "seed": run.seed,
            "strategy": run.strategy, "order": list(run.order) if run.order is not None else None,
            "status": status, "error": None, "seconds": None}


def run_sweep(plan: Sequence[PlannedRun], executor: str = "local", dry_run: bool = False, progress: bool = True,
              slurm_options: Mapping[str, Any] | None = None, verbose: bool = False, jobs: int = 1,
              runs_per_gpu: int = 1) -> SweepResult:
    """Execute ``plan``; writes ``SWEEP_DIR/sweep.json`` (atomically, after every run).

    ``local``: one run after the other; a completed run is ``reused``, a failed or
    interrupted one with a checkpoint is resumed, else started over; a run that raises is
    recorded ``failed`` (with the error) and the sweep goes on. ``slurm``: one
    ``submitit`` job per run not yet completed (``slurm_options`` go to
    ``AutoExecutor.update_parameters``); statuses are ``submitted`` with the job id.
    ``dry_run``: nothing is run or written; statuses are ``planned``. ``progress``: the
    console (locally one bar over the runs and a status line per run, each run's output in
    its ``train.log``); ``verbose``: each run's full Trainer stream on the console instead.
    ``jobs > 1`` (local): that many runs at once, each in its own process, one GPU each
    (at most ``runs_per_gpu`` runs per GPU), CPU threads split (:mod:`fisherlab.sweep.parallel`).
    """
    from fisherlab.runs.writer import atomic_write_json, utc_now
    from fisherlab.sweep.console import SweepConsole

    if executor not in ("local", "slurm"):
        raise ConfigError(f"executor: {executor!r}; expected local or slurm")
    if not plan:
        raise ConfigError("plan: empty; nothing to run")
    for name, value in (("jobs", jobs), ("runs_per_gpu", runs_per_gpu)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: {value!r}; expected an integer >= 1")
    sweep_dir = plan[0].sweep_dir
    if any(r.sweep_dir != sweep_dir for r in plan):
        raise ConfigError("plan: runs of several sweep directories; run one plan_sweep result at a time")
    if dry_run:
        records = [_record(r, "planned") for r in plan]
        if progress:
            print(format_plan(plan), file=sys.stderr, flush=True)
        return SweepResult(sweep_dir, None, records)
    _check_existing(plan)
    if executor == "slurm":
        submitit = _import_submitit()
    records = [_record(r, "pending") for r in plan]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest = sweep_dir / MANIFEST
    started = utc_now()

    def save() -> None:
        atomic_write_json(manifest, _manifest(plan, records, executor, started))

    save()
    if executor == "slurm":
        _submit(submitit, plan, records, slurm_options or {}, progress)
        save()
        return SweepResult(sweep_dir, manifest, records)
    if jobs > 1:
        from fisherlab.sweep.parallel import run_parallel

        run_parallel(plan, records, save, jobs, runs_per_gpu=runs_per_gpu, progress=progress, verbose=verbose)
        return SweepResult(sweep_dir, manifest, records)
    console = SweepConsole(plan, enabled=progress, verbose=verbose)
    with console:
        for run, record in zip(plan, records, strict=True):
            begin = time.perf_counter()
            try:
                with console.run(run) as callbacks:
                    record["status"] = execute_planned(run, callbacks)
            except Exception as err:  # one failing run never takes the sweep down
                record["status"], record["error"] = "failed", f"{type(err).__name__}: {err}"
            except BaseException as err:  # interrupted: record it, then stop
                record["status"], record["error"] = "failed", f"{type(err).__name__}: {err}"
                record["seconds"] = round(time.perf_counter() - begin, 3)
                save()
                raise
            record["seconds"] = round(time.perf_counter() - begin, 3)
            save()
            console.finished(run, record)
    return SweepResult(sweep_dir, manifest, records)


def _import_submitit():
    try:
        import submitit
    except ImportError as err:
        raise ConfigError("executor: 'slurm' needs submitit; install it with pip install 'fisherlab[slurm]'") from err
    return submitit


def _submit(submitit: Any, plan: Sequence[PlannedRun], records: list[dict[str, Any]],
            slurm_options: Mapping[str, Any], progress: bool) -> None:
    """One submitit job per run that is not complete; completed ones are ``reused``."""
    folder = plan[0].sweep_dir / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder))
    parameters = {"name": "fisherlab-sweep", **dict(slurm_options)}
    executor.update_parameters(**parameters)
    for run, record in zip(plan, records, strict=True):
        if is_completed(run):
            record["status"] = "reused"
            continue
        job = executor.submit(execute_planned, run)
        record["status"], record["job_id"] = "submitted", str(getattr(job, "job_id", ""))
        if progress:
            print(f"sweep: submitted {run.name} as job {record['job_id']}", file=sys.stderr, flush=True)


def parse_slurm_options(items: Sequence[str]) -> dict[str, Any]:
    """``["timeout_min=60", "slurm_partition=gpu"]`` -> ``{"timeout_min": 60, "slurm_partition": "gpu"}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"slurm option: expected KEY=VALUE, got {item!r}")
        text = value.strip()
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    return options

