"""Unfreezing strategies: the SELECT of Algorithm 1 (generalised scheduled unfreezing).

Algorithm 1 of the FUN paper: at every step ``i`` with ``i mod k == 0`` and
``i <= k*L`` a strategy selects frozen layer blocks to unfreeze; unfrozen blocks
stay unfrozen and the head is always trainable. A strategy here is only that
selection rule (plus which steps are decision steps); applying it to a model,
remembering what is unfrozen and checkpointing lives in
:mod:`fisherlab.unfreezing.schedule`.

Strategies are configured by plain strings so they fit in configs and run names::

    "standard"                      everything trainable from step 0
    "lpft:k=800"                    head only for k steps, then all task blocks
    "gradual:k=800"                 top layer at step 0, the next one down every k steps (GU)
    "reverse:k=800"                 bottom-up
    "permutation:order=5,4,0,1,2,3;k=50"   a given order of layer indices
    "random:k=50;seed=0"            next block drawn uniformly from the frozen ones (+Rand)
    "fisher:k=50;estimator=per_example;n_batches=40"   FUN: the frozen block with the largest tr(F)
    "fisher:k=50;data=target;languages=sw,th"   FUN by the mean tr(F) on unlabelled target inputs
    "surgical:blocks=layer.2,layer.3"   a fixed subset only

``strategy.to_string()`` gives the canonical string back; ``register_strategy(name)``
adds user strategies to the same parser. The strings are parsed by the one spec grammar
(:mod:`fisherlab.spec.grammar`) through the :data:`STRATEGIES` registry. This module is
torch-free: a strategy only sees block names and layer indices (a ``BlockMap`` is duck-typed),
so the sweep and the analysis side can parse strategies without the training stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fisherlab.spec.estimators import ESTIMATORS
from fisherlab.spec.registry import SpecRegistry
from fisherlab.spec.strategy_base import (
    FIRST_TOP,
    HEAD_BLOCK,
    SelectionState,
    Strategy,
    StrategyError,
    _check_first,
    _top_down,
    _top_first,
)

if TYPE_CHECKING:  # only for annotations: strategies duck-type the BlockMap
    from fisherlab.blocks import BlockMap

__all__ = ["LPFT", "STRATEGIES", "Fisher", "Gradual", "Permutation", "Random", "Reverse", "SelectionState",
           "Standard", "Strategy", "StrategyError", "Surgical", "available_strategies", "register_strategy",
           "strategy_from_string"]

def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: make ``name`` parseable by :func:`strategy_from_string`.

    The class must be a dataclass subclass of :class:`Strategy`; its fields are the
    string's keys (coerced from their annotations, see :mod:`fisherlab.spec.registry`).
    """
    return STRATEGIES.register(name)


def available_strategies() -> list[str]:
    """Names accepted by :func:`strategy_from_string`."""
    return STRATEGIES.names()


@dataclass
class Standard(Strategy):
    """Every task block trainable from step 0 (standard adapter training)."""

    def select(self, state: SelectionState) -> list[str]:
        return list(state.frozen)


@dataclass
class LPFT(Strategy):
    """Linear probing then fine-tuning: head only for ``k`` steps, then every task block."""

    k: int = 800

    def is_decision_step(self, step: int, n_layers: int) -> bool:
        return step in (0, self.k)

    def select(self, state: SelectionState) -> list[str]:
        return list(state.frozen) if state.step >= self.k else []


@dataclass
class Gradual(Strategy):
    """Gradual unfreezing (GU), top-down: layer L-1 at step 0, the next one every k steps."""

    k: int = 800

    def select(self, state: SelectionState) -> list[str]:
        order = _top_down(state)
        return order[:1]


@dataclass
class Reverse(Strategy):
    """Bottom-up gradual unfreezing: layer 0 at step 0, the next one up every k steps."""

    k: int = 800

    def select(self, state: SelectionState) -> list[str]:
        order = _top_down(state)
        return order[-1:]


@dataclass
class Permutation(Strategy):
    """A given order of layer indices, one every k steps (``order`` is a permutation of the layers)."""

    order: tuple[int, ...] = ()
    k: int = 800

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.order = tuple(int(i) for i in self.order)
        except (TypeError, ValueError) as err:
            raise StrategyError(f"permutation: order must be layer indices, got {self.order!r}") from err
        if not self.order:
            raise StrategyError("permutation: order is empty; give e.g. order=5,4,0,1,2,3")

    def validate(self, blocks: BlockMap) -> None:
        super().validate(blocks)
        layers = sorted(blocks.layers)
        if sorted(self.order) != layers:
            dupes = sorted({i for i in self.order if self.order.count(i) > 1})
            missing = sorted(set(layers) - set(self.order))
            unknown = sorted(set(self.order) - set(layers))
            detail = "; ".join(
                f"{what}: {vals}" for what, vals in
                (("repeated", dupes), ("missing", missing), ("not a layer", unknown)) if vals
            )
            raise StrategyError(
                f"permutation: order {list(self.order)} is not a permutation of the model's layers "
                f"{layers} ({detail})"
            )

    def select(self, state: SelectionState) -> list[str]:
        frozen = set(state.frozen)
        for layer in self.order:
            name = state.blocks.layer_name(layer)
            if name in frozen:
                return [name]
        return []


@dataclass
class Random(Strategy):
    """+Rand: the next block drawn uniformly from the frozen ones, every k steps.

    ``first=top`` (default) unfreezes the top layer at step 0 and draws from step k on,
    as the FUN paper's released ``+Rand``; ``first=random`` draws at step 0 too.
    Each draw uses ``numpy.random.default_rng([seed, step])``: the schedule is a
    function of (seed, step, frozen set), so it is identical on every DDP rank and
    after resuming, with no generator state to carry.
    """

    k: int = 800
    seed: int = 0
    first: str = FIRST_TOP

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_first(self, "random")

    def select(self, state: SelectionState) -> list[str]:
        if not state.frozen:
            return []
        top = _top_first(self, state)
        if top is not None:
            return top
        rng = np.random.default_rng([int(self.seed), int(state.step)])
        return [state.frozen[int(rng.integers(len(state.frozen)))]]


@dataclass
class Fisher(Strategy):
    """FUN: measure tr(F) of every task block (frozen ones included), unfreeze the frozen
    block with the largest trace (ties go to the higher layer).

    The measurement settings are the probe's: ``estimator`` (``per_example``, ``exact``,
    ``batch``, ``empirical``, ``reference`` = the released code), ``n_batches`` (at most
    that many training batches; the paper uses 40), ``batch_size`` (None = the
    trainer's), ``mode`` (``eval``/``train``/``as_is``) and ``seed``. Pass ``probe=`` to
    share a :class:`fisherlab.fisher.probe.FisherProbe` (its settings win).

    ``data=target;languages=sw,th`` (an extension beyond the paper, docs/unfreezing.md):
    score each block by its tr(F) averaged over the listed languages' unlabelled inputs
    instead of the training data's.
    ``first=top`` (default) unfreezes the top layer at step 0 without measuring and uses
    tr(F) from step k on, as the released code does (at step 0 the task modules are
    untrained and their traces are orders of magnitude below those a few steps later);
    ``first=fisher`` picks by tr(F) at step 0 too (fisherlab's behaviour before issue 11).
    """

    needs_measurement: ClassVar[bool] = True

    k: int = 50
    estimator: str = "per_example"
    n_batches: int = 40
    seed: int = 0
    batch_size: int | None = None
    mode: str = "eval"
    data: str | None = None  # None/"source": the training data; "target": ``languages``' inputs
    languages: tuple[str, ...] | None = None
    first: str = FIRST_TOP
    probe: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data = None if self.data == "source" else self.data
        if self.data not in (None, "target"):
            raise StrategyError(f"fisher: data must be 'source' or 'target', got {self.data!r}")
        self.languages = tuple(str(x).strip() for x in self.languages) if self.languages else None
        if (self.data == "target") != bool(self.languages):
            raise StrategyError("fisher: data=target needs languages=<comma-separated languages> "
                                f"and languages needs data=target (got data={self.data!r}, languages={self.languages!r})")
        _check_first(self, "fisher")
        if self.probe is not None:
            self.estimator = self.probe.estimator
            self.n_batches = self.probe.n_batches
            self.seed = self.probe.seed
            self.batch_size = self.probe.batch_size
            self.mode = self.probe.mode
        if self.estimator not in ESTIMATORS:
            raise StrategyError(f"fisher: estimator {self.estimator!r} is unknown; expected one of {list(ESTIMATORS)}")
        if isinstance(self.n_batches, bool) or not isinstance(self.n_batches, int) or self.n_batches <= 0:
            raise StrategyError(f"fisher: n_batches must be a positive integer, got {self.n_batches!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size <= 0):
            raise StrategyError(f"fisher: batch_size must be a positive integer, got {self.batch_size!r}")
        if self.mode not in ("eval", "train", "as_is"):
            raise StrategyError(f"fisher: mode must be 'eval', 'train' or 'as_is', got {self.mode!r}")

    def make_probe(self) -> Any:
        """The FisherProbe that measures for this strategy (created once)."""
        if self.probe is None:
            from fisherlab.fisher.probe import FisherProbe

            self.probe = FisherProbe(n_batches=self.n_batches, estimator=self.estimator, seed=self.seed,
                                     batch_size=self.batch_size, mode=self.mode)
        return self.probe

    def select(self, state: SelectionState) -> list[str]:
        if not state.frozen:
            return []
        top = _top_first(self, state)
        if top is not None:  # no measurement at step 0: the task modules are still untrained
            return top
        if state.measure is None:
            raise StrategyError("fisher: no measurement available (the strategy needs a FisherProbe attached "
                                "to training data; use UnfreezeCallback or UnfreezeSchedule(measure=...))")
        scores = self._scores(state)
        best, best_key = None, None
        for name in state.frozen:
            value = float(scores.get(name, math.nan))
            if not math.isfinite(value):
                continue
            key = (value, state.blocks[name].layer)
            if best_key is None or key > best_key:
                best, best_key = name, key
        if best is None:
            raise StrategyError(f"fisher: no finite tr(F) for any frozen block at step {state.step}: "
                                f"{ {n: scores.get(n) for n in state.frozen} }")
        return [best]

    @property
    def label(self) -> str:
        """``fisher`` (the paper's FUN) or ``fisher_target`` (scored on target-language inputs)."""
        return "fisher_target" if self.data == "target" else self.name

    def _scores(self, state: SelectionState) -> Mapping[str, float]:
        """tr(F) per layer block: the source's, or the mean over ``languages`` (data=target)."""
        if self.data != "target":
            return state.measure(state.blocks.layer_blocks)
        if state.measure_languages is None:
            raise StrategyError("fisher: data=target needs target-language measurements (UnfreezeCallback with "
                                "a probe that has the languages' input sets)")
        per = state.measure_languages(self.languages, state.blocks.layer_blocks)
        return {b: float(np.mean([per[lang][b] for lang in self.languages])) for b in state.blocks.layer_blocks}


@dataclass
class Surgical(Strategy):
    """A fixed subset of blocks trainable from step 0, the others never (Lee et al., 2023)."""

    blocks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        names = []
        for b in self.blocks:
            b = str(b).strip()
            names.append(f"layer.{b}" if b.isdigit() else b)
        self.blocks = tuple(names)
        if not self.blocks:
            raise StrategyError("surgical: blocks is empty; give e.g. blocks=layer.4,layer.5")

    def validate(self, blocks: BlockMap) -> None:
        super().validate(blocks)
        bad = [b for b in self.blocks if b not in blocks.layer_blocks and b != HEAD_BLOCK]
        if bad:
            raise StrategyError(f"surgical: blocks {bad} are not layer blocks of the model; "
                                f"layer blocks are {blocks.layer_blocks}")

    def select(self, state: SelectionState) -> list[str]:
        return [b for b in state.frozen if b in self.blocks]


# -- parsing ----------------------------------------------------------------------------
STRATEGIES = SpecRegistry("unfreezing strategy", Strategy, StrategyError)
"""The strategy registry: built-ins below, user strategies through :func:`register_strategy`."""

for _name, _cls in (("standard", Standard), ("lpft", LPFT), ("gradual", Gradual), ("reverse", Reverse),
                    ("permutation", Permutation), ("random", Random), ("fisher", Fisher), ("surgical", Surgical)):
    STRATEGIES.register(_name)(_cls)


def strategy_from_string(spec: str | Mapping[str, Any] | Strategy) -> Strategy:
    """Build a strategy from ``"name:key=value;key=value"``, a dict ``{"name": ..., **params}``
    or a Strategy (returned as is). Unknown names/keys and bad values raise StrategyError."""
    return STRATEGIES.parse(spec)
