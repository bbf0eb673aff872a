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

from fisherlab._lazy import lazy_exports

_EXPORTS = {
    "trace_fisher": ".estimators",
    "FisherMeasurement": ".measurement",
    "ESTIMATORS": ".estimators",
    "active_task_module": ".estimators",
    "FisherProbe": ".probe",
    "PerExampleGradNorms": ".persample",
    "register_sampler": ".persample",
    "FisherError": ".outputs",
    "Categorical": ".outputs",
    "OutputKind": ".outputs",
    "get_output": ".outputs",
    "infer_output": ".outputs",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
