"""The strategy base: what every unfreezing strategy (Algorithm 1's SELECT) is and sees.

:class:`Strategy` (the base dataclass of every strategy), :class:`SelectionState` (what a
strategy sees at a decision), :class:`StrategyError`, and the ``first=top`` helpers shared by
the built-in strategies. The built-ins and the :data:`~fisherlab.spec.strategies.STRATEGIES`
registry live in :mod:`fisherlab.spec.strategies`, which re-exports these names. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from fisherlab.spec.grammar import SpecError
from fisherlab.spec.registry import Spec

if TYPE_CHECKING:  # only for annotations: strategies duck-type the BlockMap
    from fisherlab.blocks import BlockMap

__all__ = ["FIRST_TOP", "HEAD_BLOCK", "SelectionState", "Strategy", "StrategyError"]

HEAD_BLOCK = "head"
"""The head block's name (``fisherlab.blocks.HEAD``), always trainable."""


class StrategyError(SpecError):
    """A strategy string/config is malformed or does not fit the model's blocks."""


@dataclass(frozen=True)
class SelectionState:
    """What a strategy sees when it selects: the step and which layer blocks are frozen.

    ``measure(block_names)`` returns tr(F) per block (probe-backed; only strategies
    that ask for it via ``needs_measurement`` get one); ``measure_languages(languages,
    block_names)`` returns ``{language: {block: tr(F)}}`` on target-language inputs.
    """

    step: int
    decision: int
    blocks: BlockMap
    frozen: tuple[str, ...]
    unfrozen: tuple[str, ...]
    measure: Callable[[Sequence[str]], Mapping[str, float]] | None = None
    measure_languages: Callable[[Sequence[str], Sequence[str]], Mapping[str, Mapping[str, float]]] | None = None


@dataclass
class Strategy(Spec):
    """Base class: a selection rule for Algorithm 1.

    Subclasses are dataclasses whose fields are their configuration. Override
    :meth:`select`; override :meth:`is_decision_step` for non-periodic rules,
    :meth:`validate` for checks against a BlockMap, :meth:`state_dict` /
    :meth:`load_state_dict` if the strategy keeps state between decisions.
    """

    name: ClassVar[str] = ""
    needs_measurement: ClassVar[bool] = False

    def __post_init__(self) -> None:
        k = getattr(self, "k", None)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
            raise StrategyError(f"{self.name or type(self).__name__}: k must be a positive integer, got {k!r}")

    # -- the rule -----------------------------------------------------------------------
    def is_decision_step(self, step: int, n_layers: int) -> bool:
        """Algorithm 1: ``step mod k == 0 and step <= k * L``."""
        k = getattr(self, "k", None)
        if k is None:
            return step == 0
        return step % k == 0 and step <= k * n_layers

    def select(self, state: SelectionState) -> list[str]:
        """The frozen layer blocks to unfreeze now (a subset of ``state.frozen``)."""
        raise NotImplementedError

    def validate(self, blocks: BlockMap) -> None:
        """Raise :class:`StrategyError` if the strategy cannot run on ``blocks``."""
        if not blocks.layer_blocks:
            raise StrategyError(f"{self.name}: the BlockMap has no layer blocks to schedule: {blocks!r}")

    # -- configuration (params/to_string/to_dict/label: fisherlab.spec.registry.Spec) ----
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state kept between decisions (none for the built-in strategies)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise StrategyError(f"{self.name}: unexpected strategy state {dict(state)!r}")

    def __str__(self) -> str:
        return self.to_string()


def _top_down(state: SelectionState) -> list[str]:
    return sorted(state.frozen, key=lambda b: state.blocks[b].layer, reverse=True)


FIRST_TOP = "top"
"""``first=top``: the first decision (step 0) unfreezes the top layer, as the FUN paper's
released code, its permutation schedules (footnote 9) and its ``+Rand`` do."""


def _check_first(strategy: Strategy, own: str) -> None:
    first = getattr(strategy, "first", FIRST_TOP)
    if first not in (FIRST_TOP, own):
        raise StrategyError(f"{strategy.name or type(strategy).__name__}: first must be {FIRST_TOP!r} "
                            f"(the top layer at step 0, the FUN paper's default) or {own!r} "
                            f"(the strategy's own rule from step 0), got {first!r}")


def _top_first(strategy: Strategy, state: SelectionState) -> list[str] | None:
    """The top frozen layer at the first decision when ``first=top``, else None (use the rule)."""
    if getattr(strategy, "first", None) == FIRST_TOP and state.decision == 0 and state.frozen:
        return _top_down(state)[:1]
    return None
