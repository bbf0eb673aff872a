"""The Hugging Face integration: callbacks, Trainer mixins, binding, one Trainer-class factory.

* :mod:`.binding` -- :class:`TrainerBoundCallback` (explicit ``bind(trainer)``, no stack
  inspection), :class:`ScheduleSettler` (the probe-to-unfreezing hand-off Protocol),
  :class:`UnboundCallbackError`;
* :mod:`.probe_callback` -- :class:`FisherProbeCallback` (when to measure tr(F));
* :mod:`.unfreeze_callback` -- :class:`UnfreezeCallback` (scheduled unfreezing);
* :mod:`.regularised` -- :class:`RegularisedTrainerMixin`, :class:`KeepText`;
* :mod:`.metrics_callback` -- :class:`ValidationMetricsCallback` (validation curve -> ``metrics.jsonl``);
* :mod:`.run` -- :class:`FisherlabRun` (a complete run from your own Trainer script: ``attach``, ``finish``);
* :mod:`.trainer` -- :func:`make_trainer_class` (binds callbacks; unfreezing and
  regulariser mixins).

Imports are lazy (PEP 562): ``import fisherlab.hf`` alone does not import transformers.
"""

from __future__ import annotations

from fisherlab._lazy import lazy_exports

_EXPORTS = {
    "ScheduleSettler": ".binding",
    "TrainerBoundCallback": ".binding",
    "UnboundCallbackError": ".binding",
    "bind_callbacks": ".binding",
    "FisherProbeCallback": ".probe_callback",
    "attach_training_data": ".probe_callback",
    "UnfreezeCallback": ".unfreeze_callback",
    "KeepText": ".regularised",
    "RegularisedTrainerMixin": ".regularised",
    "BindingTrainerMixin": ".trainer",
    "UnfreezingTrainerMixin": ".trainer",
    "make_trainer_class": ".trainer",
    "ValidationMetricsCallback": ".metrics_callback",
    "FisherlabRun": ".run",
    "FisherlabRunError": ".run",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
