"""Planning a sweep: methods x seeds x sampled permutation schedules -> a list of PlannedRun.

``plan_sweep`` turns one base config (a YAML/JSON file, ``fisherlab train`` flags and/or
an ``overrides`` dict) into a list of :class:`PlannedRun` -- one per method and seed, plus
the FUN paper's random permutation schedules (section 5.2) and, when ``gradual`` is not
run, the top-down order (method label ``top_down``) -- and validates every run's config
before anything trains. Method presets and the sampler are torch-free
(:mod:`fisherlab.spec.methods`, :mod:`fisherlab.spec.schedules`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fisherlab.config import ConfigError
from fisherlab.spec.grammar import SpecError, parse_spec
from fisherlab.spec.methods import DEFAULT_METHODS, METHODS, PERMUTATION, TOP_DOWN, get_method

__all__ = ["DEFAULT_METHODS", "PlannedRun", "SweepResult", "count_layers", "format_plan", "plan_sweep"]

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
        from fisherlab.config import parse_config

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
    try:
        value = parse_spec(strategy, "strategy")[1].get("k")
    except SpecError as err:
        raise ConfigError(f"strategy: {err}") from None
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(f"strategy: k={value!r} in {strategy!r} is not an integer") from err


def _task_base(config: Any) -> str:
    """The base model a run of ``config`` builds, resolved as ``train.prepare_run`` does."""
    if config.model.base:
        return str(config.model.base)
    from fisherlab.config import load_task

    base = (load_task(config).model_defaults() or {}).get("base")
    if base is None:
        raise ConfigError(f"base: required for task {config.task.task!r} (it brings no default base model)")
    return str(base)


def count_layers(config: Any) -> int:
    """``num_hidden_layers`` of the base model ``config`` would build, without building it.

    Reads ``config.json`` of a local model directory, else the table of the papers' base
    models (:data:`fisherlab.presets.models.PAPER_BASE_MODELS`, no hub access), else
    ``AutoConfig.from_pretrained`` (other hub names; needs the hub or its cache)."""
    from fisherlab.presets.models import known_layer_count

    base = _task_base(config)
    local = Path(base).expanduser()
    if not local.is_dir() and known_layer_count(base) is not None:
        return int(known_layer_count(base))
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
               permutation_seed: int = 0, k: int | None = None, out: str | Path = "runs",
               overrides: Mapping[str, Any] | None = None,
               method_overrides: Mapping[str, Mapping[str, Any]] | None = None,
               n_layers: int | None = None) -> list[PlannedRun]:
    """The runs of ``methods`` x ``seeds`` (+ ``permutations`` sampled schedules x ``seeds``).

    ``config_file``/``args`` are the base config of every run (as ``fisherlab train`` takes
    them), ``overrides`` config fields on top of the file (below the flags); the sweep sets
    ``run_dir`` (``OUT/<name>``), ``seed``, ``strategy`` and ``method``. Method names map
    to strategy strings by :data:`fisherlab.spec.methods.METHODS` (``standard``, ``gradual``,
    ``fisher``, ``random``, ``lpft``, ``reverse``); ``k`` defaults to the ``k=`` of the base
    config's strategy. ``permutations=N`` adds N distinct orders from the paper's sampler
    (top layer first, the next from {L-2, L-3}; seeded by ``permutation_seed``; method
    ``permutation``) plus the top-down order (method ``top_down``) when ``gradual`` is not
    among the methods. ``method_overrides`` maps a method label (``fisher``, ``permutation``,
    ...) to its own ``k`` and config fields (e.g. the FUN paper's Table 3: LPFT k=25, GU
    k=800, FUN k=50; a smaller learning rate and more epochs for scheduled COPA runs);
    they win over the base config and ``k``. ``n_layers`` gives the base model's layer
    count for the permutation sampler (default: :func:`count_layers`). Every run's config
    is parsed and checked here: a ConfigError names the field before anything runs.
    """
    from fisherlab.config import parse_config, validate_static
    from fisherlab.config_resolve import resolve_task
    from fisherlab.spec.schedules import sample_permutation_schedules, top_down_order
    from fisherlab.spec.strategies import strategy_from_string

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

    base_overrides = dict(overrides or {})
    base = parse_config(config_file, args, {**base_overrides, "run_dir": str(out / "_base")})
    validate_static(base)
    resolve_task(base)  # task, languages, base model, adapters: the checks a run makes before building
    probe_batches = base.probe.probe_batches
    if k is None:
        k = _explicit_k(base.schedule.strategy)
    labels = [*methods, *([PERMUTATION] if permutations else []),
              *([TOP_DOWN] if permutations and "gradual" not in methods else [])]
    per_method = _check_method_overrides(method_overrides or {}, labels)
    schedules: list[tuple[str, str, tuple[int, ...] | None]] = []  # (name stem, method, order)
    for method in methods:
        try:
            needs_k = get_method(method).uses_k
        except SpecError as err:
            raise ConfigError(f"methods: {err}") from None
        if needs_k and per_method.get(method, {}).get("k", k) is None:
            raise ConfigError(f"k: method {method!r} needs an unfreezing interval; pass --k or put k= in the "
                              f"base config's strategy (now {base.schedule.strategy!r})")
        schedules.append((method, method, None))
    if permutations:
        if any(per_method.get(label, {}).get("k", k) is None for label in labels if label in (PERMUTATION, TOP_DOWN)):
            raise ConfigError("k: permutation schedules need an unfreezing interval; pass --k or put k= in the "
                              f"base config's strategy (now {base.schedule.strategy!r})")
        if n_layers is None:
            n_layers = count_layers(base)
        try:
            orders = sample_permutation_schedules(n_layers, permutations, seed=permutation_seed)
        except ValueError as err:
            raise ConfigError(f"permutations: {err}") from err
        width = max(2, len(str(permutations)))
        schedules += [(f"perm{i:0{width}d}", PERMUTATION, tuple(order)) for i, order in enumerate(orders)]
        if "gradual" not in methods:  # the paper's extra schedule: the plain top-down order
            schedules.append(("perm-topdown", TOP_DOWN, tuple(top_down_order(n_layers))))

    plan: list[PlannedRun] = []
    for stem, method, order in schedules:
        for seed in seeds:
            own = dict(per_method.get(method, {}))
            strategy = METHODS[method].strategy_string(own.pop("k", k), seed, probe_batches, order)
            try:
                strategy_from_string(strategy)
            except SpecError as err:
                raise ConfigError(f"strategy: {strategy!r} of {stem}: {err}") from err
            name = f"{stem}-s{seed}"
            run_dir = out / name
            overrides = {"run_dir": str(run_dir), "output_dir": str(run_dir / "checkpoints"), "seed": seed,
                         "strategy": strategy, "method": method, "resume": False, "overwrite": False}
            overrides = {**base_overrides, **own, **overrides}
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


def _check_method_overrides(method_overrides: Mapping[str, Mapping[str, Any]],
                            labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Validate per-method overrides: known, planned method labels; no per-run fields; a positive k."""
    out: dict[str, dict[str, Any]] = {}
    for method, fields in method_overrides.items():
        if method not in METHODS:
            raise ConfigError(f"method_overrides: unknown method {method!r}; known: {', '.join(METHODS)}")
        if method not in labels:
            raise ConfigError(f"method_overrides: method {method!r} is not planned (planned: {', '.join(labels)})")
        if not isinstance(fields, Mapping):
            raise ConfigError(f"method_overrides.{method}: expected a mapping of field: value, got {fields!r}")
        fields = dict(fields)
        bad = [key for key in fields if key in _PER_RUN]
        if bad:
            raise ConfigError(f"method_overrides.{method}: {bad} are set per run by the sweep")
        k = fields.get("k")
        if "k" in fields and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
            raise ConfigError(f"method_overrides.{method}.k: must be a positive integer, got {k!r}")
        out[method] = fields
    return out


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


