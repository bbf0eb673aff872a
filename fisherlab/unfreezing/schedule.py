"""The Algorithm 1 driver: which layer blocks are unfrozen, when, and the checkpointable state.

:class:`UnfreezeSchedule` is framework-free (no Trainer): call :meth:`begin` once with
the model, then :meth:`advance` at every step boundary ``i`` (after ``i`` optimizer
steps, before the forward of step ``i``). It asks the strategy at decision steps,
keeps unfrozen blocks unfrozen, keeps the head trainable, and applies the result to
the model's ``requires_grad`` flags (freezing also drops ``.grad`` so AdamW neither
moves nor decays a frozen block). Blocks that are neither layers nor the head
(``shared``, ``embeddings``) are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fisherlab.blocks import HEAD, BlockMap
from fisherlab.unfreezing.strategies import (
    SelectionState,
    Strategy,
    StrategyError,
    strategy_from_string,
)

STATE_VERSION = 1


@dataclass
class UnfreezeEvent:
    """One decision that unfroze at least one block."""

    step: int
    blocks: list[str]
    scores: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "blocks": list(self.blocks), "scores": self.scores}


@dataclass
class UnfreezeSchedule:
    """State of scheduled unfreezing for one model: strategy + BlockMap + what is unfrozen.

    ``measure(model, block_names, step) -> {block: trace}`` is needed only by
    strategies with ``needs_measurement`` (FUN).
    """

    strategy: Strategy
    blocks: BlockMap
    measure: Callable[[torch.nn.Module, Sequence[str], int], Mapping[str, float]] | None = None
    unfrozen: list[str] = field(default_factory=list)
    events: list[UnfreezeEvent] = field(default_factory=list)
    decided_through: int = -1
    # (model, languages, block_names, step) -> {language: {block: trace}} (``fisher:data=target``)
    measure_languages: Callable[..., Mapping[str, Mapping[str, float]]] | None = None

    def __post_init__(self) -> None:
        self.strategy = strategy_from_string(self.strategy)
        if not isinstance(self.blocks, BlockMap):
            raise StrategyError(f"UnfreezeSchedule: blocks must be a BlockMap, got {type(self.blocks).__name__}")
        self.strategy.validate(self.blocks)

    # -- queries --------------------------------------------------------------------------
    @property
    def frozen(self) -> list[str]:
        """Layer blocks not unfrozen yet, in layer order."""
        done = set(self.unfrozen)
        return [b for b in self.blocks.layer_blocks if b not in done]

    @property
    def trainable(self) -> list[str]:
        """Blocks the schedule keeps trainable now (head included)."""
        return list(self.unfrozen) + ([HEAD] if self.blocks.has_head else [])

    def check_model(self, model: torch.nn.Module) -> None:
        """Every block parameter must exist in ``model`` (clear error otherwise)."""
        for name in self.blocks.names:
            self.blocks.parameters(model, name)

    # -- driving ----------------------------------------------------------------------------
    def apply(self, model: torch.nn.Module) -> None:
        """Set requires_grad: head and unfrozen layer blocks on, frozen layer blocks off (grad None)."""
        trainable = set(self.trainable)
        on = [b for b in self.blocks.layer_blocks if b in trainable] + ([HEAD] if self.blocks.has_head else [])
        off = [b for b in self.blocks.layer_blocks if b not in trainable]
        if on:
            self.blocks.set_trainable(model, on, True)
        if off:
            self.blocks.set_trainable(model, off, False)

    def schedulable_parameters(self, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        """Every parameter the schedule may ever train (layer blocks + head)."""
        names = self.blocks.layer_blocks + ([HEAD] if self.blocks.has_head else [])
        return self.blocks.all_parameters(model, names)

    def begin(self, model: torch.nn.Module, step: int = 0) -> UnfreezeEvent | None:
        """Start (or resume) at ``step``: apply the current state, then decide for ``step``."""
        self.check_model(model)
        self.apply(model)
        return self.advance(model, step)

    def advance(self, model: torch.nn.Module, step: int) -> UnfreezeEvent | None:
        """Take the decision of step ``step`` (once; later calls for the same step are no-ops)."""
        if step <= self.decided_through:
            return None
        self.decided_through = step
        if not self.strategy.is_decision_step(step, self.blocks.n_layers):
            return None
        frozen = self.frozen
        if not frozen:
            return None
        scores: dict[str, float] | None = None
        measure_fn = None
        if self.strategy.needs_measurement:
            if self.measure is None:
                raise StrategyError(f"{self.strategy.name}: this strategy measures tr(F) but the schedule has no "
                                    "measure function (UnfreezeCallback attaches one from the training data)")

            def measure_fn(names: Sequence[str]) -> Mapping[str, float]:
                nonlocal scores
                result = self.measure(model, list(names), step)
                scores = {n: float(v) for n, v in result.items()}
                return result

            def languages_fn(languages: Sequence[str], names: Sequence[str]) -> Mapping[str, Mapping[str, float]]:
                nonlocal scores
                if self.measure_languages is None:
                    raise StrategyError(f"{self.strategy.name}: no target-language measure function")
                result = self.measure_languages(model, list(languages), list(names), step)
                scores = {n: sum(float(result[lang][n]) for lang in languages) / len(languages) for n in names}
                return result

        state = SelectionState(step=step, decision=self._decision_index(step), blocks=self.blocks,
                               frozen=tuple(frozen), unfrozen=tuple(self.unfrozen), measure=measure_fn,
                               measure_languages=languages_fn if self.strategy.needs_measurement else None)
        chosen = list(self.strategy.select(state))
        bad = [b for b in chosen if b not in frozen]
        if bad:
            raise StrategyError(f"{self.strategy.name}: selected {bad} at step {step}, which are not frozen "
                                f"layer blocks (frozen: {frozen})")
        chosen = [b for b in self.blocks.layer_blocks if b in set(chosen)] if len(chosen) > 1 else chosen
        if not chosen:
            return None
        self.unfrozen.extend(chosen)
        self.blocks.set_trainable(model, chosen, True)
        event = UnfreezeEvent(step=step, blocks=chosen, scores=scores)
        self.events.append(event)
        return event

    def _decision_index(self, step: int) -> int:
        k = getattr(self.strategy, "k", None)
        return step // k if k else 0

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: strategy string, unfrozen blocks in order, events, last decided step."""
        return {
            "version": STATE_VERSION,
            "strategy": self.strategy.to_string(),
            "n_layers": self.blocks.n_layers,
            "unfrozen": list(self.unfrozen),
            "decided_through": self.decided_through,
            "events": [e.to_dict() for e in self.events],
            "strategy_state": self.strategy.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses a state made by another strategy or model."""
        if state.get("version") != STATE_VERSION:
            raise StrategyError(f"unfreezing state: unknown version {state.get('version')!r} "
                                f"(expected {STATE_VERSION})")
        if state.get("strategy") != self.strategy.to_string():
            raise StrategyError(f"unfreezing state was saved by strategy {state.get('strategy')!r}, "
                                f"this run uses {self.strategy.to_string()!r}")
        unknown = [b for b in state.get("unfrozen", []) if b not in self.blocks.layer_blocks]
        if state.get("n_layers") != self.blocks.n_layers or unknown:
            raise StrategyError(f"unfreezing state does not fit the BlockMap ({self.blocks.n_layers} layers): "
                                f"saved n_layers={state.get('n_layers')}, unknown blocks {unknown}")
        self.unfrozen = list(state["unfrozen"])
        self.decided_through = int(state["decided_through"])
        self.events = [UnfreezeEvent(int(e["step"]), list(e["blocks"]), e.get("scores")) for e in state["events"]]
        self.strategy.load_state_dict(state.get("strategy_state", {}))
