"""Regularisers for fine-tuning: the Fisher penalty, L2, consistency between two views.

* :mod:`.penalty` -- :class:`FisherPenalty` (finite difference or double backprop);
* :mod:`.l2` -- :class:`L2`;
* :mod:`.views` / :mod:`.resegment` -- the second views (:class:`Dropout`,
  :class:`EmbeddingNoise`, :class:`ParameterNoise`, :class:`Resegment`);
* :mod:`.consistency` -- :class:`Consistency` (divergence between the views);
* :mod:`.loss` -- :func:`regularised_loss` (task loss + terms, fused forward);
* :mod:`.strings` -- :func:`regulariser_from_string` / :func:`regularisers_from_strings`.

The Trainer integration is :mod:`fisherlab.hf`. Imports are lazy (PEP 562).
"""

from __future__ import annotations

from fisherlab._lazy import lazy_exports

_EXPORTS = {
    "RegulariserError": ".base",
    "FisherPenalty": ".penalty",
    "L2": ".l2",
    "View": ".views",
    "ViewRows": ".views",
    "Dropout": ".views",
    "EmbeddingNoise": ".views",
    "ParameterNoise": ".views",
    "Resegment": ".resegment",
    "Consistency": ".consistency",
    "DIVERGENCES": ".consistency",
    "REDUCTIONS": ".consistency",
    "VIEWS": ".consistency",
    "factor_divergence": ".consistency",
    "row_kl": ".consistency",
    "MultiViewSubword": ".mvr",
    "regularised_loss": ".loss",
    "regulariser_from_string": ".strings",
    "regularisers_from_strings": ".strings",
    "regulariser_from_spec": ".strings",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
