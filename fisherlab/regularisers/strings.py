"""Regularisers from configuration strings (``regulariser_from_string``)::

    fisher_penalty:alpha=0.01,method=finite_difference
    consistency:view=dropout,weight=1.0
    l2:weight=0.01,to=init

Moved verbatim from ``fisherlab/regularise.py`` (the spec layer replaces this parser).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fisherlab.regularisers.base import RegulariserError
from fisherlab.regularisers.consistency import DIVERGENCES, REDUCTIONS, Consistency
from fisherlab.regularisers.l2 import L2
from fisherlab.regularisers.loss import Term
from fisherlab.regularisers.penalty import METHODS, TASK_AT, FisherPenalty
from fisherlab.regularisers.resegment import Resegment
from fisherlab.regularisers.views import Dropout, EmbeddingNoise, ParameterNoise, View


# --------------------------------------------------------------------------------------
# configuration strings
# --------------------------------------------------------------------------------------
def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _sub_batch(text: str) -> int | float | None:
    if text.lower() in ("none", ""):
        return None
    return int(text) if text.isdigit() else float(text)


def _opt_int(text: str) -> int | None:
    return None if text.lower() in ("none", "") else int(text)


_PENALTY_KEYS: dict[str, Callable[[str], Any]] = {
    "alpha": float, "method": str, "scaled": _boolean, "h": float, "sub_batch": _sub_batch, "seed": int,
    "output": str, "task_at": str,
}
_L2_KEYS: dict[str, Callable[[str], Any]] = {"weight": float, "to": str}
_CONSISTENCY_KEYS: dict[str, Callable[[str], Any]] = {
    "view": str, "weight": float, "divergence": str, "stop_grad": _boolean, "reduction": str, "output": str,
}
_VIEW_KEYS: dict[str, dict[str, Callable[[str], Any]]] = {
    "dropout": {},
    "embedding_noise": {"eps": float, "dist": str, "seed": int},
    "parameter_noise": {"sigma": float, "seed": int},
    "resegment": {"dropout": float, "alpha": float, "seed": int, "max_length": _opt_int},
}
_VIEW_ALIASES = {"dropout": "dropout", "rdrop": "dropout", "r-drop": "dropout",
                 "embedding_noise": "embedding_noise", "r3f": "embedding_noise", "embedding": "embedding_noise",
                 "parameter_noise": "parameter_noise", "parameter": "parameter_noise",
                 "resegment": "resegment", "subword": "resegment", "mvr": "resegment"}
_KINDS = ("fisher_penalty", "consistency", "l2")
_KIND_ALIASES = {"fisher_penalty": "fisher_penalty", "fisher": "fisher_penalty", "fpen": "fisher_penalty",
                 "consistency": "consistency", "kl": "consistency", "l2": "l2"}
_CHOICES = {"method": METHODS, "task_at": TASK_AT, "divergence": DIVERGENCES, "reduction": REDUCTIONS, "to": L2.TARGETS,
            "dist": EmbeddingNoise.DISTS}


def _parse_fields(spec: str, body: str, allowed: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        if "=" not in item:
            raise RegulariserError(f"regulariser {spec!r}: {item!r} is not key=value; allowed keys: "
                                   f"{', '.join(allowed)}")
        key, raw = (x.strip() for x in item.split("=", 1))
        if key not in allowed:
            raise RegulariserError(f"regulariser {spec!r}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        if key in values:
            raise RegulariserError(f"regulariser {spec!r}: key {key!r} given twice")
        try:
            value = allowed[key](raw)
        except ValueError as err:
            expected = getattr(allowed[key], "__name__", "value").lstrip("_")
            raise RegulariserError(f"regulariser {spec!r}: bad value {raw!r} for key {key!r} "
                                   f"(expected {expected}: {err})") from None
        if key in _CHOICES and value not in _CHOICES[key]:
            raise RegulariserError(f"regulariser {spec!r}: bad value {raw!r} for key {key!r}; allowed: "
                                   f"{', '.join(_CHOICES[key])}")
        values[key] = value
    return values


def regulariser_from_string(spec: str, *, tokenizer: Any = None) -> Term:
    """Build one term from ``kind:key=value,...`` (kinds: ``fisher_penalty``, ``consistency``,
    ``l2``). ``tokenizer`` is needed by ``consistency:view=resegment``."""
    if not isinstance(spec, str) or not spec.strip():
        raise RegulariserError(f"regulariser spec must be a non-empty string like "
                               f"'fisher_penalty:alpha=0.01'; got {spec!r}")
    head, _, body = spec.strip().partition(":")
    kind = _KIND_ALIASES.get(head.strip().lower())
    if kind is None:
        raise RegulariserError(f"regulariser {spec!r}: unknown kind {head.strip()!r}; allowed kinds: "
                               f"{', '.join(_KINDS)}")
    if kind == "fisher_penalty":
        return FisherPenalty(**_parse_fields(spec, body, _PENALTY_KEYS))
    if kind == "l2":
        return L2(**_parse_fields(spec, body, _L2_KEYS))
    # consistency: the view decides which extra keys are allowed
    view_name = None
    for item in body.split(","):
        key, _, raw = item.partition("=")
        if key.strip() == "view":
            view_name = _VIEW_ALIASES.get(raw.strip().lower())
            if view_name is None:
                raise RegulariserError(f"regulariser {spec!r}: bad value {raw.strip()!r} for key 'view'; "
                                       f"allowed: {', '.join(_VIEW_KEYS)}")
    if view_name is None:
        raise RegulariserError(f"regulariser {spec!r}: consistency needs view=...; allowed views: "
                               f"{', '.join(_VIEW_KEYS)}")
    fields = _parse_fields(spec, body, {**_CONSISTENCY_KEYS, **_VIEW_KEYS[view_name]})
    fields.pop("view")
    view_args = {k: fields.pop(k) for k in list(fields) if k in _VIEW_KEYS[view_name]}
    view: View
    if view_name == "dropout":
        view = Dropout()
    elif view_name == "embedding_noise":
        view = EmbeddingNoise(**view_args)
    elif view_name == "parameter_noise":
        view = ParameterNoise(**view_args)
    else:
        if tokenizer is None:
            raise RegulariserError(f"regulariser {spec!r}: view=resegment needs the tokenizer (pass tokenizer=..., "
                                   "or give the Trainer a processing_class)")
        view = Resegment(tokenizer, **view_args)
    return Consistency(view, **fields)


def regularisers_from_strings(specs: str | Iterable[str | Term] | None, *, tokenizer: Any = None) -> list[Term]:
    """Terms from strings (``;``-separated or a list) or ready-made term objects."""
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [s for s in (part.strip() for part in specs.split(";")) if s]
    return [regulariser_from_string(s, tokenizer=tokenizer) if isinstance(s, str) else s for s in specs]


__all__ = ["regulariser_from_string", "regularisers_from_strings"]
