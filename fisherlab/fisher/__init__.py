"""The probe library: per-block Fisher-trace estimators and the output distributions they use.

Imports are lazy (PEP 562) so ``from fisherlab.fisher.outputs import ...`` does not pull
in the estimators (and their dependencies) and vice versa.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "trace_fisher": "estimators",
    "FisherMeasurement": "estimators",
    "ESTIMATORS": "estimators",
    "FisherError": "outputs",
    "Categorical": "outputs",
    "OutputKind": "outputs",
    "get_output": "outputs",
    "infer_output": "outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fisherlab.fisher' has no attribute {name!r}")
    return getattr(import_module(f"fisherlab.fisher.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
