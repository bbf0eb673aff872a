"""Unfreezing strategies (moved): they live in the torch-free :mod:`fisherlab.spec.strategies`.

Kept so ``from fisherlab.unfreezing.strategies import ...`` keeps working.
"""

from fisherlab.spec.strategies import *  # noqa: F403
from fisherlab.spec.strategies import __all__  # noqa: F401
