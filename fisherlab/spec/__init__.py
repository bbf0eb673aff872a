"""The spec layer: one ``name:key=value;key=value`` grammar and the registries built on it.

Torch-free (the analysis side may import it). Modules:

* :mod:`~fisherlab.spec.grammar` -- :func:`parse_spec`, :func:`format_spec`, :func:`split_specs`, :class:`SpecError`;
* :mod:`~fisherlab.spec.registry` -- :class:`Spec` (base of every spec dataclass) and :class:`SpecRegistry`
  (parse, coerce from field types, validate, round-trip, label);
* :mod:`~fisherlab.spec.strategies` -- the unfreezing strategies (Algorithm 1's SELECT) and :data:`STRATEGIES`;
* :mod:`~fisherlab.spec.schedules` -- the FUN paper's permutation-schedule sampler;
* :mod:`~fisherlab.spec.regularisers` -- regulariser specs and :data:`REGULARISERS`;
* :mod:`~fisherlab.spec.methods` -- sweep/demo method presets and a run's method label.
"""

from __future__ import annotations

from fisherlab.spec.grammar import SpecError, format_spec, parse_spec, split_specs
from fisherlab.spec.methods import (
    DEFAULT_METHODS,
    METHODS,
    Method,
    get_method,
    method_label,
    method_strategy,
)
from fisherlab.spec.registry import Spec, SpecRegistry
from fisherlab.spec.regularisers import (
    REGULARISERS,
    RegulariserSpec,
    describe_regularisers,
    parse_regularisers,
    regulariser_family,
    regulariser_spec,
)
from fisherlab.spec.schedules import (
    count_permutation_schedules,
    sample_permutation_schedules,
    top_down_order,
)
from fisherlab.spec.strategies import STRATEGIES, Strategy, StrategyError, strategy_from_string

__all__ = [
    "DEFAULT_METHODS", "METHODS", "REGULARISERS", "STRATEGIES", "Method", "RegulariserSpec", "Spec", "SpecError",
    "SpecRegistry", "Strategy", "StrategyError", "count_permutation_schedules", "describe_regularisers",
    "format_spec", "get_method", "method_label", "method_strategy", "parse_regularisers", "parse_spec",
    "regulariser_family", "regulariser_spec", "sample_permutation_schedules", "split_specs",
    "strategy_from_string", "top_down_order",
]
