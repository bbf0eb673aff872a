"""fisherlab: Fisher-information learning dynamics for multilingual adapter fine-tuning.

The package is split so that the analysis side (``fisherlab.runs``,
``fisherlab.analysis``, ``fisherlab.plots``, ``fisherlab.report``) never imports
torch; the training side (``fisherlab.blocks``, ``fisherlab.fisher``,
``fisherlab.regularisers``, ``fisherlab.unfreezing``, ``fisherlab.hf``,
``fisherlab.train``) does. Nothing heavy is imported here: the names below are
resolved lazily (PEP 562), so ``fisherlab.load_runs`` imports only the analysis side
and ``fisherlab.BlockMap`` only the training side it needs.

>>> from fisherlab import BlockMap, trace_fisher, UnfreezeCallback, FisherProbeCallback, load_runs
"""

from __future__ import annotations

from fisherlab._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # errors (torch-free)
    "FisherlabError": "fisherlab.errors",
    # blocks and measurement (torch)
    "BlockMap": "fisherlab.blocks",
    "BlockMapError": "fisherlab.blocks",
    "trace_fisher": "fisherlab.fisher.estimators",
    "ESTIMATORS": "fisherlab.fisher.estimators",
    "FisherMeasurement": "fisherlab.fisher.measurement",
    "FisherError": "fisherlab.fisher.outputs",
    "FisherProbe": "fisherlab.fisher.probe",
    "PerExampleGradNorms": "fisherlab.fisher.persample",
    # unfreezing strategies and their Trainer integration
    "strategy_from_string": "fisherlab.unfreezing.strategies",
    "StrategyError": "fisherlab.unfreezing.strategies",
    "UnfreezeCallback": "fisherlab.hf.unfreeze_callback",
    "FisherProbeCallback": "fisherlab.hf.probe_callback",
    "make_trainer_class": "fisherlab.hf.trainer",
    "FisherlabRun": "fisherlab.hf.run",
    "ValidationMetricsCallback": "fisherlab.hf.metrics_callback",
    # regularisers
    "FisherPenalty": "fisherlab.regularisers.penalty",
    "L2": "fisherlab.regularisers.l2",
    "Consistency": "fisherlab.regularisers.consistency",
    "RegulariserError": "fisherlab.regularisers.base",
    "regularised_loss": "fisherlab.regularisers.loss",
    "regularisers_from_strings": "fisherlab.regularisers.strings",
    # the run store and analysis (torch-free)
    "RunWriter": "fisherlab.runs",
    "read_run": "fisherlab.runs",
    "read_runs": "fisherlab.runs",
    "load_runs": "fisherlab.analysis",
    "build_report": "fisherlab.report",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
