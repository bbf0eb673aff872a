"""Unfreezing strategies (moved): they live in the torch-free :mod:`fisherlab.spec.strategies`.

Kept so ``from fisherlab.unfreezing.strategies import ...`` keeps working.
"""

from fisherlab.spec.strategies import (  # noqa: F401
    LPFT,
    STRATEGIES,
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
