"""Generalised scheduled unfreezing (Algorithm 1 of the FUN paper) for Hugging Face Trainers.

>>> from fisherlab.unfreezing import strategy_from_string
>>> strategy_from_string("gradual:k=800").to_string()
'gradual:k=800'

The Trainer callback is :class:`fisherlab.hf.UnfreezeCallback`. See ``docs/unfreezing.md``.
"""

from __future__ import annotations

from fisherlab.unfreezing.optim import schedulable_param_groups
from fisherlab.unfreezing.schedule import UnfreezeEvent, UnfreezeSchedule
from fisherlab.unfreezing.strategies import (
    LPFT,
    Fisher,
    Gradual,
    Permutation,
    Random,
    Reverse,
    SelectionState,
    Standard,
    Strategy,
    StrategyError,
    Surgical,
    available_strategies,
    register_strategy,
    strategy_from_string,
)

__all__ = [
    "LPFT", "Fisher", "Gradual", "Permutation", "Random", "Reverse",
    "SelectionState", "Standard", "Strategy", "StrategyError", "Surgical",
    "UnfreezeEvent", "UnfreezeSchedule", "available_strategies",
    "register_strategy", "schedulable_param_groups", "strategy_from_string",
]
