"""The probe library: per-block Fisher-trace estimators, the per-example engine, the probe.

* :func:`trace_fisher` (:mod:`.estimators`) -- tr(F) per block with five estimators;
* :class:`FisherMeasurement` (:mod:`.measurement`) -- the one record type;
* :class:`PerExampleGradNorms` (:mod:`.persample`) -- the per-example engine;
* :class:`FisherProbe` (:mod:`.probe`) -- what to measure during training (the Trainer
  callback deciding *when* is :class:`fisherlab.hf.FisherProbeCallback`);
* the output distributions (:mod:`.outputs`).

Imports are lazy (PEP 562) so ``from fisherlab.fisher.outputs import ...`` does not pull
in the estimators (and their dependencies) and vice versa.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "trace_fisher": "estimators",
    "FisherMeasurement": "measurement",
    "ESTIMATORS": "estimators",
    "active_task_module": "estimators",
    "FisherProbe": "probe",
    "PerExampleGradNorms": "persample",
    "register_sampler": "persample",
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
