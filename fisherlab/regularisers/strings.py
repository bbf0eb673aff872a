"""Regularisers from configuration strings: parsed specs -> term objects.

Every kind, alias, key, view and choice lives in the torch-free spec layer
(:mod:`fisherlab.spec.regularisers`); this module only builds the torch terms::

    fisher_penalty:alpha=0.01;method=finite_difference
    consistency:view=dropout;weight=1.0
    l2:weight=0.01;to=init
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fisherlab.regularisers.base import RegulariserError
from fisherlab.regularisers.consistency import Consistency
from fisherlab.regularisers.l2 import L2
from fisherlab.regularisers.loss import Term
from fisherlab.regularisers.penalty import FisherPenalty
from fisherlab.regularisers.resegment import Resegment
from fisherlab.regularisers.views import Dropout, EmbeddingNoise, ParameterNoise, View
from fisherlab.spec.grammar import SpecError, split_specs
from fisherlab.spec.regularisers import (
    ConsistencySpec,
    FisherPenaltySpec,
    L2Spec,
    MVRSpec,
    RegulariserSpec,
    regulariser_spec,
)

_VIEWS: dict[str, Callable[..., View]] = {"dropout": Dropout, "embedding_noise": EmbeddingNoise,
                                          "parameter_noise": ParameterNoise}


def regulariser_from_spec(spec: RegulariserSpec, *, tokenizer: Any = None) -> Term:
    """The term object of a parsed spec. ``tokenizer`` is needed by ``consistency:view=resegment``."""
    if isinstance(spec, FisherPenaltySpec):
        return FisherPenalty(**spec.term_kwargs())
    if isinstance(spec, L2Spec):
        return L2(**spec.term_kwargs())
    if isinstance(spec, MVRSpec):
        if tokenizer is None:
            raise RegulariserError(f"regulariser {spec.to_string()!r}: mvr needs the tokenizer "
                                   "(pass tokenizer=..., or give the Trainer a processing_class)")
        from fisherlab.regularisers.mvr import MultiViewSubword

        return MultiViewSubword(Resegment(tokenizer, **spec.view_kwargs()), **spec.term_kwargs())
    if isinstance(spec, ConsistencySpec):
        if spec.view == "resegment":
            if tokenizer is None:
                raise RegulariserError(f"regulariser {spec.to_string()!r}: view=resegment needs the tokenizer "
                                       "(pass tokenizer=..., or give the Trainer a processing_class)")
            view: View = Resegment(tokenizer, **spec.view_kwargs())
        else:
            view = _VIEWS[spec.view](**spec.view_kwargs())
        return Consistency(view, **spec.term_kwargs())
    raise RegulariserError(f"no term is built for regulariser spec {spec!r} (a {type(spec).__name__})")


def regulariser_from_string(spec: str | Mapping[str, Any] | RegulariserSpec, *, tokenizer: Any = None) -> Term:
    """One term from ``kind:key=value;key=value`` (kinds, aliases and keys: :mod:`fisherlab.spec.regularisers`)."""
    try:
        parsed = regulariser_spec(spec)
    except SpecError as err:
        raise RegulariserError(str(err)) from None
    return regulariser_from_spec(parsed, tokenizer=tokenizer)


def regularisers_from_strings(specs: str | Iterable[str | Term] | None, *, tokenizer: Any = None) -> list[Term]:
    """Terms from strings (a list, or one string where each ``name:`` starts a new spec) or ready terms."""
    try:
        items = split_specs(specs, "regularisers")
    except SpecError as err:
        raise RegulariserError(str(err)) from None
    return [regulariser_from_string(s, tokenizer=tokenizer) if isinstance(s, (str, Mapping, RegulariserSpec)) else s
            for s in items]
