"""Many runs of the protocol: methods x seeds x sampled permutation schedules.

``plan_sweep`` turns one base config (a YAML/JSON file and/or ``fisherlab train``
flags) into a list of :class:`PlannedRun` -- one per method and seed, plus the FUN
paper's random permutation schedules (section 5.2) -- and validates every run's
config before anything trains. ``run_sweep`` executes the plan: locally, one
``run_training`` after the other (finished runs reused, interrupted ones resumed,
a failing run recorded and skipped), or on SLURM through ``submitit``. The sweep
directory gets a ``sweep.json`` manifest listing every planned run and its status.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fisherlab.train import ConfigError

__all__ = ["DEFAULT_METHODS", "MANIFEST", "PlannedRun", "SweepResult", "count_layers", "execute_planned",
           "format_plan", "parse_slurm_options", "plan_sweep", "run_sweep"]

DEFAULT_METHODS = ("standard", "gradual", "fisher")
MANIFEST = "sweep.json"
PERMUTATION = "permutation"

# Fields the sweep sets per run: the base config and the extra flags must leave them to it.
_PER_RUN = ("run_dir", "output_dir", "seed", "strategy", "method", "resume", "overwrite")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its name, directory, strategy and what ``parse_config`` takes."""

    name: str
    run_dir: Path
    strategy: str
    method: str
    seed: int
    sweep_dir: Path
    config_file: str | None = None
    args: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    order: tuple[int, ...] | None = None  # permutation runs: the layer order

    def parse(self, **extra: Any):
        """The run's :class:`fisherlab.train.RunConfig` (``extra`` overrides, e.g. ``resume=True``)."""
        from fisherlab.train import parse_config

        return parse_config(self.config_file, self.args, {**self.overrides, **extra})


@dataclass
class SweepResult:
    """Where a sweep wrote its manifest and one record per planned run."""

    sweep_dir: Path
    manifest: Path | None
    records: list[dict[str, Any]]

    @property
    def statuses(self) -> dict[str, str]:
        """Run name -> ``trained`` | ``reused`` | ``failed`` | ``submitted`` | ``planned``."""
        return {r["name"]: r["status"] for r in self.records}

    @property
    def failed(self) -> list[str]:
        return [r["name"] for r in self.records if r["status"] == "failed"]


# --------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------
def _explicit_k(strategy: str) -> int | None:
    """The ``k=`` written in a strategy string (``gradual:k=50`` -> 50), else None."""
    from fisherlab.analysis.loading import parse_strategy

    value = parse_strategy(strategy)[1].get("k")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(f"strategy: k={value!r} in {strategy!r} is not an integer") from err


def _needs_k(method: str, probe_batches: int) -> bool:
    from fisherlab.demo import method_strategy

    return method_strategy(method, 1, 0, probe_batches) != method_strategy(method, 2, 0, probe_batches)


def _task_base(config: Any) -> str:
    """The base model a run of ``config`` builds, resolved as ``train.prepare_run`` does."""
    if config.model.base:
        return str(config.model.base)
    from fisherlab.train import load_task

    base = (load_task(config).model_defaults() or {}).get("base")
    if base is None:
        raise ConfigError(f"base: required for task {config.task.task!r} (it brings no default base model)")
    return str(base)


def count_layers(config: Any) -> int:
    """``num_hidden_layers`` of the base model ``config`` would build, without building it.

    Reads ``config.json`` of a local model directory, else ``AutoConfig.from_pretrained``
    (hub names; needs the hub or its cache)."""
    base = _task_base(config)
    local = Path(base).expanduser()
    if local.is_dir():
        path = local / "config.json"
        try:
            model_config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"base: cannot read the model config {str(path)!r}: {err}") from err
        layers = model_config.get("num_hidden_layers")
    else:
        from transformers import AutoConfig

        try:
            layers = getattr(AutoConfig.from_pretrained(base), "num_hidden_layers", None)
        except (OSError, ValueError) as err:
            raise ConfigError(f"base: cannot load the model config of {base!r}: {err}") from err
    if not isinstance(layers, int) or layers < 1:
        raise ConfigError(f"base: the model config of {base!r} has no positive num_hidden_layers ({layers!r})")
    return layers


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("seeds: empty; give at least one seed")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds: must be integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: duplicated in {seeds!r}")
    return seeds


def plan_sweep(config_file: str | Path | None = None, args: Sequence[str] = (), *,
               methods: Sequence[str] = DEFAULT_METHODS, seeds: Sequence[int] = (0,), permutations: int = 0,
               permutation_seed: int = 0, k: int | None = None, out: str | Path = "runs") -> list[PlannedRun]:
    """The runs of ``methods`` x ``seeds`` (+ ``permutations`` sampled schedules x ``seeds``).

    ``config_file``/``args`` are the base config of every run (as ``fisherlab train`` takes
    them); the sweep sets ``run_dir`` (``OUT/<name>``), ``seed``, ``strategy`` and ``method``.
    Method names map to strategy strings as in the demo (``standard``, ``gradual``,
    ``fisher``, ``random``, ``lpft``, ``reverse``); ``k`` defaults to the ``k=`` of the base
    config's strategy. ``permutations=N`` adds N distinct orders from the paper's sampler
    (top layer first, the next from {L-2, L-3}; seeded by ``permutation_seed``) plus the
    top-down order when ``gradual`` is not among the methods. Every run's config is parsed
    and checked here: a ConfigError names the field before anything runs.
    """
    from fisherlab.analysis.schedules import sample_permutation_schedules
    from fisherlab.demo import method_strategy
    from fisherlab.train import parse_config, validate_static
    from fisherlab.unfreezing import StrategyError, strategy_from_string

    methods = [str(m).strip() for m in methods]
    seeds = _check_seeds(seeds)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods: duplicated in {methods!r}")
    if not methods and not permutations:
        raise ConfigError("methods: empty and no permutations: nothing to run")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 0:
        raise ConfigError(f"permutations: must be an integer >= 0, got {permutations!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
        raise ConfigError(f"k: must be a positive integer, got {k!r}")
    out = Path(out)
    args = tuple(str(a) for a in args)
    config_file = None if config_file is None else str(config_file)

    base = parse_config(config_file, args, {"run_dir": str(out / "_base")})
    probe_batches = base.probe.probe_batches
    if k is None:
        k = _explicit_k(base.schedule.strategy)
    schedules: list[tuple[str, str, tuple[int, ...] | None]] = []  # (name stem, method, order)
    for method in methods:
        try:
            needs_k = _needs_k(method, probe_batches)
        except ValueError as err:
            raise ConfigError(f"methods: {err}") from err
        if needs_k and k is None:
            raise ConfigError(f"k: method {method!r} needs an unfreezing interval; pass --k or put k= in the "
                              f"base config's strategy (now {base.schedule.strategy!r})")
        schedules.append((method, method, None))
    if permutations:
        if k is None:
            raise ConfigError("k: permutation schedules need an unfreezing interval; pass --k or put k= in the "
                              f"base config's strategy (now {base.schedule.strategy!r})")
        n_layers = count_layers(base)
        try:
            orders = sample_permutation_schedules(n_layers, permutations, seed=permutation_seed)
        except ValueError as err:
            raise ConfigError(f"permutations: {err}") from err
        width = max(2, len(str(permutations)))
        schedules += [(f"perm{i:0{width}d}", PERMUTATION, tuple(order)) for i, order in enumerate(orders)]
        if "gradual" not in methods:  # the paper's extra schedule: the plain top-down order
            schedules.append(("perm-topdown", PERMUTATION, tuple(range(n_layers - 1, -1, -1))))

    plan: list[PlannedRun] = []
    for stem, method, order in schedules:
        for seed in seeds:
            if order is None:
                strategy = method_strategy(method, k if k is not None else 1, seed, probe_batches)
            else:
                strategy = f"permutation:order={','.join(map(str, order))};k={k}"
            try:
                strategy_from_string(strategy)
            except (StrategyError, ValueError) as err:
                raise ConfigError(f"strategy: {strategy!r} of {stem}: {err}") from err
            name = f"{stem}-s{seed}"
            run_dir = out / name
            overrides = {"run_dir": str(run_dir), "output_dir": str(run_dir / "checkpoints"), "seed": seed,
                         "strategy": strategy, "method": method, "resume": False, "overwrite": False}
            run = PlannedRun(name=name, run_dir=run_dir, strategy=strategy, method=method, seed=seed,
                             sweep_dir=out, config_file=config_file, args=args, overrides=overrides, order=order)
            config = parse_config(config_file, args, overrides)
            _check_per_run_fields(run, config)
            validate_static(config)
            plan.append(run)
    dirs = [str(r.run_dir.resolve()) for r in plan]
    if len(set(dirs)) != len(dirs):  # cannot happen with distinct names; guards future naming changes
        raise ConfigError(f"run_dir: the sweep would write two runs into one directory ({dirs})")
    return plan


def _check_per_run_fields(run: PlannedRun, config: Any) -> None:
    """Extra flags win over the sweep's per-run values: refuse those that would."""
    actual = {"run_dir": config.run.run_dir, "output_dir": config.training.output_dir, "seed": config.training.seed,
              "strategy": config.schedule.strategy, "method": config.schedule.method,
              "resume": config.run.resume, "overwrite": config.run.overwrite}
    for key in _PER_RUN:
        expected = run.overrides[key]
        if str(actual[key]) != str(expected):
            hint = " (give the unfreezing interval with --k or as k= in the config file's strategy)" \
                if key == "strategy" else ""
            raise ConfigError(f"{key}: set per run by the sweep ({expected!r} for {run.name}); "
                              f"remove it from the extra flags (they gave {actual[key]!r}){hint}")


def format_plan(plan: Sequence[PlannedRun], statuses: Mapping[str, str] | None = None) -> str:
    """A plain-text table of the plan: name, method, seed, strategy (and status)."""
    head = ["name", "method", "seed", "strategy"] + (["status"] if statuses is not None else [])
    rows = [[r.name, r.method, str(r.seed), r.strategy] + ([statuses.get(r.name, "")] if statuses is not None else [])
            for r in plan]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [head, *rows])


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
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


def execute_planned(run: PlannedRun) -> str:
    """Train one planned run: ``reused`` if complete, else resume (checkpoint) or start over; ``trained``."""
    from fisherlab.train import last_checkpoint, run_training

    info = _run_info(run.run_dir)
    if info is not None and info.get("status") == "completed":
        return "reused"
    if info is not None and last_checkpoint(run.run_dir) is not None:
        config = run.parse(resume=True)
    else:
        config = run.parse(overwrite=info is not None)
    run_training(config)
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
              slurm_options: Mapping[str, Any] | None = None) -> SweepResult:
    """Execute ``plan``; writes ``SWEEP_DIR/sweep.json`` (atomically, after every run).

    ``local``: one run after the other; a completed run is ``reused``, a failed or
    interrupted one with a checkpoint is resumed, else started over; a run that raises is
    recorded ``failed`` (with the error) and the sweep goes on. ``slurm``: one
    ``submitit`` job per run not yet completed (``slurm_options`` go to
    ``AutoExecutor.update_parameters``); statuses are ``submitted`` with the job id.
    ``dry_run``: nothing is run or written; statuses are ``planned``.
    """
    from fisherlab.runs.writer import atomic_write_json, utc_now

    if executor not in ("local", "slurm"):
        raise ConfigError(f"executor: {executor!r}; expected local or slurm")
    if not plan:
        raise ConfigError("plan: empty; nothing to run")
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
    for index, (run, record) in enumerate(zip(plan, records, strict=True), start=1):
        begin = time.perf_counter()
        if progress:
            print(f"sweep [{index}/{len(plan)}] {run.name} ({run.strategy})", file=sys.stderr, flush=True)
        try:
            record["status"] = execute_planned(run)
        except Exception as err:  # one failing run never takes the sweep down
            record["status"], record["error"] = "failed", f"{type(err).__name__}: {err}"
        except BaseException as err:  # interrupted: record it, then stop
            record["status"], record["error"] = "failed", f"{type(err).__name__}: {err}"
            record["seconds"] = round(time.perf_counter() - begin, 3)
            save()
            raise
        record["seconds"] = round(time.perf_counter() - begin, 3)
        save()
        if progress:
            detail = f": {record['error']}" if record["error"] else ""
            print(f"sweep [{index}/{len(plan)}] {run.name} {record['status']}{detail}", file=sys.stderr, flush=True)
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
        info = _run_info(run.run_dir)
        if info is not None and info.get("status") == "completed":
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

