"""Methods: the named unfreezing presets a sweep or the demo runs, and a run's method label.

A method names a strategy and the knobs the sweep fills in per run (``k``, the run's
``seed``, the probe's ``n_batches``)::

    standard   -> standard
    gradual    -> gradual:k=K                       (top-down, GU)
    reverse    -> reverse:k=K
    lpft       -> lpft:k=K
    random     -> random:k=K;seed=SEED              (+Rand)
    fisher     -> fisher:k=K;n_batches=B;seed=SEED  (FUN)
    permutation (sampled orders) and top_down (the plain top-down order the sweep adds when
    ``gradual`` is not run) -> permutation:order=...;k=K

``method_label(strategy, regularisers)`` is the default method label of a run
(``standard+fisher_penalty``, ``gradual+consistency/dropout``): strategy name plus the
canonical regulariser labels, so aliases never split one method into two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fisherlab.spec.grammar import SpecError, format_spec, parse_spec
from fisherlab.spec.regularisers import RegulariserSpec

__all__ = ["DEFAULT_METHODS", "METHODS", "PERMUTATION", "TOP_DOWN", "Method", "get_method", "method_label",
           "method_strategy"]

PERMUTATION = "permutation"
TOP_DOWN = "top_down"


@dataclass(frozen=True)
class Method:
    """A named preset: ``strategy`` name and which per-run values its string takes."""

    name: str
    strategy: str
    uses_k: bool = False
    uses_seed: bool = False
    uses_probe_batches: bool = False
    sweepable: bool = True  # False: the sweep makes these runs itself (permutation orders)

    def strategy_string(self, k: int | None, seed: int, probe_batches: int,
                        order: Iterable[int] | None = None) -> str:
        """The strategy string of one run (``k`` required when :attr:`uses_k`)."""
        params: dict[str, Any] = {}
        if self.strategy == PERMUTATION:
            if order is None:
                raise SpecError(f"method {self.name!r}: needs the layer order")
            params["order"] = tuple(order)
        if self.uses_k:
            if k is None:
                raise SpecError(f"method {self.name!r}: needs an unfreezing interval k")
            params["k"] = k
        if self.uses_probe_batches:
            params["n_batches"] = probe_batches
        if self.uses_seed:
            params["seed"] = seed
        return format_spec(self.strategy, params)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("standard", "standard"),
    Method("gradual", "gradual", uses_k=True),
    Method("reverse", "reverse", uses_k=True),
    Method("lpft", "lpft", uses_k=True),
    Method("random", "random", uses_k=True, uses_seed=True),
    Method("fisher", "fisher", uses_k=True, uses_seed=True, uses_probe_batches=True),
    Method(PERMUTATION, PERMUTATION, uses_k=True, sweepable=False),
    Method(TOP_DOWN, PERMUTATION, uses_k=True, sweepable=False),
)}

DEFAULT_METHODS = ("standard", "gradual", "fisher")
"""The methods of ``fisherlab sweep`` and ``fisherlab demo`` when none are given."""


def get_method(name: str) -> Method:
    """The sweepable method ``name``; :class:`SpecError` lists the known ones."""
    method = METHODS.get(str(name).strip())
    if method is None or not method.sweepable:
        known = sorted(n for n, m in METHODS.items() if m.sweepable)
        raise SpecError(f"unknown method {name!r}; expected some of {known} (permutation schedules: --permutations)")
    return method


def method_strategy(method: str, k: int | None, seed: int, probe_batches: int) -> str:
    """The strategy string of a sweepable method, e.g. ``method_strategy("fisher", 5, 2, 8)``."""
    return get_method(method).strategy_string(k, seed, probe_batches)


def method_label(strategy: str | Mapping[str, Any] | Any, regularisers: Iterable[RegulariserSpec] = ()) -> str:
    """Default method label: the strategy's label (its name; ``fisher_target`` for
    ``fisher:data=target``), then ``+label`` per regulariser."""
    from fisherlab.spec.strategies import strategy_from_string

    if isinstance(strategy, str):
        name = parse_spec(strategy, "strategy")[0]
    elif isinstance(strategy, Mapping):
        name = str(strategy.get("name"))
    else:
        name = getattr(strategy, "label", strategy.name)
    if isinstance(strategy, (str, Mapping)):
        try:
            name = strategy_from_string(strategy).label
        except SpecError:
            pass  # a strategy this process cannot build (e.g. unregistered): its name
    return "+".join([name, *(r.label for r in regularisers)])
