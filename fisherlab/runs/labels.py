"""The labels contract of ``run.json``: what a run *is*, under one key (torch-free).

Since labels version 1 every run written by ``RunWriter.create`` has a ``labels`` object::

    "labels": {"version": 1, "method": "fisher", "strategy": "fisher:k=50;...", "seed": 0,
               "model": "testbed-encoder", "task": "testbed", "task_module": "seq_bn",
               "regulariser": "none", "regulariser_weight": 0.0, "estimator": "per_example"}

The analysis side reads a run's labels with :func:`labels_of` and nothing else. Stores
written before the contract (no ``labels``) are read through :func:`legacy_labels`, the one
compatibility shim: it reproduces the guessing the reader used to do (a list of config-key
aliases per label, then any config key of that name; the ~10 spellings of the regulariser
column). See ``docs/run-format.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from fisherlab.runs.schema import RunFormatError

__all__ = ["LABELS_VERSION", "LABEL_FIELDS", "UNLABELLED", "flatten_config", "labels_from_config", "legacy_config_value", "labels_of",
           "legacy_labels", "validate_labels"]

LABELS_VERSION = 1
UNLABELLED = "(unlabelled)"
"""The method label of a run whose writer knew no method (a bare script)."""

#: label -> (kind, description). Every label is required; ``|null`` kinds may be null.
LABEL_FIELDS: dict[str, tuple[str, str]] = {
    "version": ("int", "labels contract version (1)"),
    "method": ("str", "method label runs are grouped by (e.g. fisher, gradual, top_down, standard+l2)"),
    "strategy": ("str|null", "canonical unfreezing strategy string"),
    "seed": ("int|null", "training seed"),
    "model": ("str|null", "base model name"),
    "task": ("str|null", "task name"),
    "task_module": ("str|null", "seq_bn | lora | full"),
    "regulariser": ("str", "canonical regulariser labels joined by '+' ('none' without regulariser)"),
    "regulariser_weight": ("number|null", "the single regulariser's weight (0 without, null for several)"),
    "estimator": ("str|null", "tr(F) estimator of the probe/strategy (null when nothing was measured)"),
}

# -- the legacy shim's tables (stores without ``labels``) ------------------------------------------
_CONFIG_ALIASES: dict[str, tuple[str, ...]] = {
    "method": ("method", "name.method"),
    "strategy": ("strategy", "unfreezing.strategy", "unfreeze.strategy", "schedule.strategy",
                 "scheduler.strategy"),
    "seed": ("seed", "training.seed", "train.seed", "trainer.seed"),
    "k": ("k", "unfreezing.k", "unfreeze.k", "schedule.k", "scheduler.k", "unfreezing.every"),
    "model": ("model", "model.name", "model_name", "model.model_name", "base_model", "model.base",
              "model.base_model", "model.arch", "model.name_or_path", "model_name_or_path"),
    "task": ("task", "task.name", "task_name", "task.task", "dataset", "task.dataset"),
    "task_module": ("task_module", "model.task_module", "adapter.type", "model.adapter", "adapter",
                    "task.module"),
    "regulariser": ("regulariser.kind", "regulariser.name", "regulariser.type", "regulariser",
                    "regularizer.kind", "regularizer.name", "regularizer.type", "regularizer",
                    "regularisation.kind", "regularization.kind"),
    "regulariser_weight": ("regulariser.weight", "regulariser.lambda", "regulariser.coef",
                           "regularizer.weight", "regularizer.lambda", "regularisation.weight",
                           "regularization.weight"),
    "estimator": ("fisher.estimator", "probe.probe_estimator"),
}
_LEAF_FALLBACK = ("strategy", "k", "seed", "model", "task", "task_module")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys; lists become JSON text (hashable, groupable)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                flat.update(flatten_config(value, prefix=f"{name}."))
            else:
                flat[name] = "{}"
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            flat[name] = value
    return flat


def _lookup(flat: Mapping[str, Any], label: str) -> Any:
    for key in _CONFIG_ALIASES.get(label, ()):
        if key in flat and flat[key] is not None:
            return flat[key]
    if label in _LEAF_FALLBACK:
        matches = sorted((k for k in flat if k.rsplit(".", 1)[-1] == label and flat[k] is not None),
                         key=lambda k: (k.count("."), k))
        if matches:
            return flat[matches[0]]
    return None


def legacy_config_value(config: Mapping[str, Any], name: str) -> Any:
    """The shim's lookup of ``name`` in a config (its alias list, then any key of that name);
    also used for ``k`` when a strategy string carries none."""
    return _lookup(flatten_config(config), name)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float | None:
    """A finite number from a config value (bools and text that is no number: None)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def legacy_labels(info: Mapping[str, Any]) -> dict[str, Any]:
    """THE compatibility shim: labels of a ``run.json`` without ``labels`` (stores before labels v1).

    Reproduces the old guessing: each label from the first config key of its alias list,
    then any config key named like the label (shortest dotted path first); ``strategy``
    also from ``strategy.name``; ``method`` falls back to the strategy's name, then
    ``unknown``; ``model`` to ``env.model``; ``estimator`` to ``fisher.estimator``;
    regulariser ``none``/0 when no regulariser key exists.
    """
    config = info.get("config") if isinstance(info.get("config"), Mapping) else {}
    flat = flatten_config(config)
    strategy = _lookup(flat, "strategy")
    if strategy is None and isinstance(flat.get("strategy.name"), str):
        strategy = flat["strategy.name"]
    method = _lookup(flat, "method")
    if method is None:
        name = str(strategy).split(":", 1)[0].strip() if strategy is not None else ""
        method = name or "unknown"
    fisher = info.get("fisher") if isinstance(info.get("fisher"), Mapping) else {}
    env = info.get("env") if isinstance(info.get("env"), Mapping) else {}
    model = _lookup(flat, "model")
    regulariser = _lookup(flat, "regulariser")
    weight = _lookup(flat, "regulariser_weight")
    return {
        "version": LABELS_VERSION, "method": str(method), "strategy": _text(strategy),
        "seed": _int(_lookup(flat, "seed")), "model": _text(model if model is not None else env.get("model")),
        "task": _text(_lookup(flat, "task")), "task_module": _text(_lookup(flat, "task_module")),
        "regulariser": "none" if regulariser is None else str(regulariser),
        "regulariser_weight": 0.0 if regulariser is None else _number(weight),
        "estimator": _text(fisher.get("estimator") or _lookup(flat, "estimator")),
    }


def labels_from_config(config: Mapping[str, Any], fisher: Mapping[str, Any] | None = None,
                       env: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Labels derived from what a writer was given (``RunWriter.create`` without ``labels``):
    the shim's reading of ``config``, with method ``(unlabelled)`` when the config names none."""
    labels = legacy_labels({"config": dict(config), "fisher": dict(fisher or {}), "env": dict(env or {})})
    flat = flatten_config(config)
    if _lookup(flat, "method") is None and labels["strategy"] is None:
        labels["method"] = UNLABELLED
    return labels


def validate_labels(labels: Any, where: str = "labels") -> dict[str, Any]:
    """``labels`` checked against :data:`LABEL_FIELDS` (a copy); :class:`RunFormatError` names the
    missing or ill-typed label and what was expected."""
    if not isinstance(labels, Mapping):
        raise RunFormatError(f"{where}: must be an object with {list(LABEL_FIELDS)}, got {type(labels).__name__}")
    out = dict(labels)
    out.setdefault("version", LABELS_VERSION)
    missing = [k for k in LABEL_FIELDS if k not in out]
    if missing:
        raise RunFormatError(f"{where}: missing label(s) {missing}; required: {list(LABEL_FIELDS)}")
    for key, (kind, _) in LABEL_FIELDS.items():
        value = out[key]
        if value is None and kind.endswith("|null"):
            continue
        base = kind.split("|")[0]
        ok = {"str": isinstance(value, str) and bool(value.strip()),
              "int": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool)}[base]
        if not ok:
            raise RunFormatError(f"{where}: label {key!r} must be {kind.replace('str', 'non-empty text')}, "
                                 f"got {value!r}")
    if out["version"] != LABELS_VERSION:
        raise RunFormatError(f"{where}: labels version {out['version']!r} is not supported (expected {LABELS_VERSION})")
    return out


def labels_of(info: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A run's labels and, when they did not come from a valid ``labels`` object, why (for the problems table).

    ``info["labels"]`` when present and valid; otherwise :func:`legacy_labels`.
    """
    if "labels" not in info:
        return legacy_labels(info), None
    try:
        return validate_labels(info["labels"], "run.json labels"), None
    except RunFormatError as err:
        return legacy_labels(info), f"{err}; labels read from the config instead"
