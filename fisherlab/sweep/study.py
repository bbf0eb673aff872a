"""Sweep files: one YAML that says a whole study cell (base config, methods, seeds, preset).

A sweep file is a run config (``fisherlab train`` fields) with a ``sweep:`` section::

    sweep:
      preset: table3/mbert-xnli     # fisherlab.presets.fun: base fields + per-method k/lr/epochs
      methods: [standard, lpft, gradual, fisher, random]
      seeds: [0, 1, 2]              # or a count: 3 -> 0, 1, 2
      permutations: 9               # + the FUN paper's sampled schedules (and top_down)
      permutation_seed: 0
      k: 50                         # default interval (methods without an override)
      n_layers: 12                  # optional: the base model's layers (else from the papers' table / config.json)
      method_overrides: {lpft: {k: 25}}
    task: xnli
    languages: en,de,sw             # checked against the task's languages

Precedence, lowest first: preset base fields < the file's fields < ``fisherlab sweep``
extra flags; preset method overrides < the file's ``method_overrides``. Planning
(``plan_study``) checks every run's config, strategy string, task name and languages,
and the layer count, without the hub, the data or any weights: ``fisherlab sweep FILE
--dry-run`` is the validation of a paper config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fisherlab.config import ConfigError
from fisherlab.sweep.plan import PlannedRun, plan_sweep

__all__ = ["is_sweep_file", "load_sweep_file", "plan_study"]

_SWEEP_KEYS = ("preset", "methods", "seeds", "permutations", "permutation_seed", "k", "n_layers",
               "method_overrides", "out")


def _read(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"sweep file {str(path)!r} cannot be read: {err}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"sweep file {str(path)!r} must hold a mapping of field: value")
    return loaded


def is_sweep_file(path: str | Path | None) -> bool:
    """Whether ``path`` is a YAML/JSON file with a top-level ``sweep:`` section."""
    if path is None or not Path(path).is_file() or Path(path).suffix not in (".yaml", ".yml", ".json"):
        return False
    return "sweep" in _read(Path(path))


def load_sweep_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(sweep settings, base config fields)`` of a sweep file, the preset merged in."""
    from fisherlab.presets.fun import PresetError, fun_preset

    path = Path(path)
    loaded = _read(path)
    sweep = loaded.pop("sweep", None)
    if not isinstance(sweep, dict):
        raise ConfigError(f"sweep file {str(path)!r}: 'sweep' must be a mapping, got {sweep!r}")
    unknown = sorted(set(sweep) - set(_SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"sweep file {str(path)!r}: unknown sweep key(s) {unknown}; allowed: {list(_SWEEP_KEYS)}")
    base: dict[str, Any] = {}
    overrides: dict[str, dict[str, Any]] = {}
    if sweep.get("preset") is not None:
        try:
            preset = fun_preset(str(sweep["preset"]))
        except PresetError as err:
            raise ConfigError(f"sweep.preset: {err}") from None
        base.update(preset.base)
        overrides = {m: dict(v) for m, v in preset.method_overrides.items()}
    for method, fields in (sweep.get("method_overrides") or {}).items():
        if not isinstance(fields, Mapping):
            raise ConfigError(f"sweep.method_overrides.{method}: expected a mapping, got {fields!r}")
        overrides[method] = {**overrides.get(method, {}), **fields}
    base.update(loaded)
    seeds = sweep.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    methods = sweep.get("methods", ["standard", "gradual", "fisher"])
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    permutations = int(sweep.get("permutations", 0) or 0)
    planned = {*methods, *(["permutation", "top_down"] if permutations else [])}
    if "gradual" in methods:
        planned.discard("top_down")
    overrides = {m: v for m, v in overrides.items() if m in planned or m in (sweep.get("method_overrides") or {})}
    settings = {"methods": list(methods), "seeds": list(seeds), "permutations": permutations,
                "permutation_seed": int(sweep.get("permutation_seed", 0)), "k": sweep.get("k"),
                "n_layers": sweep.get("n_layers"), "method_overrides": overrides, "out": sweep.get("out")}
    return settings, base


def _check_languages(base: Mapping[str, Any]) -> None:
    """Evaluation/source languages must be the task's (tasks with a fixed language list)."""
    from fisherlab.tasks.catalog import CATALOG

    info = {t.name: t for t in CATALOG}.get(str(base.get("task", "testbed")))
    if info is None or not info.languages:
        return
    given = [s.strip() for s in str(base.get("languages") or "").split(",") if s.strip()]
    if base.get("source_language"):
        given.append(str(base["source_language"]))
    bad = [lang for lang in given if lang not in info.languages]
    if bad:
        raise ConfigError(f"languages: {bad} are not languages of task {info.name!r} ({', '.join(info.languages)})")


def plan_study(path: str | Path, args: Sequence[str] = (), out: str | Path | None = None) -> list[PlannedRun]:
    """Plan the runs of a sweep file (see the module docstring); ``out`` wins over ``sweep.out``."""
    settings, base = load_sweep_file(path)
    _check_languages(base)
    return plan_sweep(None, args, methods=settings["methods"], seeds=settings["seeds"],
                      permutations=settings["permutations"], permutation_seed=settings["permutation_seed"],
                      k=settings["k"], out=out or settings["out"] or "runs", overrides=base,
                      method_overrides=settings["method_overrides"], n_layers=settings["n_layers"])
