"""Generalised scheduled unfreezing (Algorithm 1 of the FUN paper) for Hugging Face Trainers.

>>> from fisherlab.unfreezing import strategy_from_string, UnfreezeCallback
>>> strategy_from_string("gradual:k=800").to_string()
'gradual:k=800'

See ``docs/unfreezing.md``.
"""

from __future__ import annotations

from fisherlab.unfreezing.callback import UnfreezeCallback
from fisherlab.unfreezing.optim import (
    SchedulableTrainerMixin,
    make_trainer_class,
    schedulable_param_groups,
)
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
    "LPFT", "Fisher", "Gradual", "Permutation", "Random", "Reverse", "SchedulableTrainerMixin",
    "SelectionState", "Standard", "Strategy", "StrategyError", "Surgical", "UnfreezeCallback",
    "UnfreezeEvent", "UnfreezeSchedule", "available_strategies", "make_trainer_class",
    "register_strategy", "schedulable_param_groups", "strategy_from_string",
]
