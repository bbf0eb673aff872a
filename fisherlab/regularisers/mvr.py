"""Multi-view subword regularisation (MVR; Wang, Ruder & Neubig, 2021), the consistency loss
Stickland & Murray use ("the same loss and hyper-parameters as Wang et al. (2021)").

With ``x`` the deterministic segmentation and ``x'`` a sampled one (the
:class:`~fisherlab.regularisers.resegment.Resegment` view), the training objective is

    L = 1/2 CE(p(y|x), y) + 1/2 CE(p(y|x'), y) + lambda * KL(p_T(.|x) || p_T(.|x'))

where ``p_T`` is the softmax of the logits divided by the temperature ``T`` and no
gradient is stopped (both views are trained through the KL). fisherlab's Trainer already
adds the task loss ``CE(p(y|x), y)`` on the deterministic rows, so this term returns

    lambda * KL_T + ce_share * (CE(x') - CE(x))          (ce_share = 1/2)

Compared with ``consistency:view=resegment`` (``weight * symmetric KL``, task loss on the
deterministic view only, temperature 1): MVR also trains on the sampled view's labels, uses
the one-sided ``KL(p_det || p_sampled)`` and a temperature. Sentence-level heads only
(classification, multiple choice): their labels apply to both segmentations unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from fisherlab.fisher.outputs import Categorical
from fisherlab.regularisers.base import RegulariserError, batch_size
from fisherlab.regularisers.consistency import Consistency, factor_divergence
from fisherlab.regularisers.views import View, ViewRows
from fisherlab.torch_utils import RNGSnapshot

__all__ = ["MultiViewSubword", "SENTENCE_KINDS"]

SENTENCE_KINDS = ("classification", "multiple_choice")


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy, ``logits [B, C]``, ``labels [B]``, in float32 or wider."""
    return torch.nn.functional.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels)


class MultiViewSubword(Consistency):
    """The MVR objective as a term (module docstring). ``weight`` is lambda."""

    def __init__(self, view: View, weight: float = 1.0, temperature: float = 1.0, ce_share: float = 0.5,
                 output: str | None = None) -> None:
        super().__init__(view, divergence="kl", stop_grad=False, weight=weight, reduction="batchmean", output=output)
        if not (math.isfinite(temperature) and temperature > 0):
            raise RegulariserError(f"mvr: temperature must be a finite number > 0; got {temperature!r}")
        if not (0.0 <= ce_share <= 1.0):
            raise RegulariserError(f"mvr: ce_share must lie in [0, 1]; got {ce_share!r}")
        self.temperature, self.ce_share = float(temperature), float(ce_share)
        self.name = "mvr"

    def __repr__(self) -> str:
        return (f"MultiViewSubword(view={self.view!r}, weight={self.weight}, temperature={self.temperature}, "
                f"ce_share={self.ce_share})")

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any], outputs: Any = None, *, step: int = 0,
                 rng: RNGSnapshot | None = None, view_outputs: Any = None, view_rows: ViewRows | None = None,
                 **_: Any) -> Tensor:
        kind, clean, view = self.factors(model, batch, outputs, step=step, rng=rng, view_outputs=view_outputs,
                                         view_rows=view_rows)
        if kind.name not in SENTENCE_KINDS:
            raise RegulariserError(f"mvr: output {kind.name!r} is not supported (sentence-level heads: "
                                   f"{', '.join(SENTENCE_KINDS)}); use consistency:view=resegment")
        labels = batch.get("labels")
        if labels is None:
            raise RegulariserError("mvr: the batch has no 'labels' (the objective trains on both segmentations)")
        t = self.temperature
        kl = factor_divergence([Categorical(f.name, f.logits / t, f.example) for f in clean],
                               [Categorical(f.name, f.logits / t, f.example) for f in view],
                               batch_size(batch), divergence="kl", stop_grad=False, reduction="batchmean")
        value = self.weight * kl
        if self.ce_share:
            labels = labels.to(clean[0].logits.device).long().reshape(-1)
            ce_clean = sum(_cross_entropy(f.logits, labels) for f in clean)
            ce_view = sum(_cross_entropy(f.logits, labels) for f in view)
            value = value + self.ce_share * (ce_view - ce_clean)
        return value
