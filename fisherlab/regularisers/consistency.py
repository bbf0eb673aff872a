"""Consistency regularisers: a divergence between the model's predictions on two views.

``Consistency(view, divergence, stop_grad, weight, reduction)`` adds
``weight * D(p_clean, p_view)`` where the predictive distributions are those of
:mod:`fisherlab.fisher.outputs` (lists of categorical factors). ``D`` is computed per
factor row and summed over the rows of each example (token-level heads: over tokens),
then reduced over the batch:

* ``reduction="batchmean"``: sum over rows of an example, mean over examples;
* ``reduction="rowmean"``: mean over the rows of each factor, summed over factors
  (per-token mean for token-level heads).

Both are batch-size invariant (duplicating the batch leaves them unchanged).
``divergence="kl"`` is ``KL(p_clean || p_view)``; ``"sym_kl"`` is
``(KL(p||q) + KL(q||p)) / 2``. ``stop_grad=True`` detaches the clean distribution.

Views:

* :class:`Dropout` (R-Drop): the same inputs again; the second dropout mask differs.
* :class:`EmbeddingNoise` (R3F): ``U(-eps, eps)`` or ``N(0, eps^2)`` noise added to the
  word embeddings (the output of ``get_input_embeddings()``, before positions).
* :class:`ParameterNoise`: the model at ``theta + e``, ``e ~ N(0, sigma^2 I)`` on the
  trainable parameters; ``E_e KL = (sigma^2 / 2) tr(F) + O(sigma^3)`` (Stickland &
  Murray). The perturbed forward replays the clean forward's dropout masks.
* :class:`Resegment` (multi-view subword regularisation): the raw words re-tokenised
  with sampled segmentation. Needs ``batch["words"]`` (see its docstring).

``Dropout``, ``EmbeddingNoise`` and ``Resegment`` are *fusable*: the Trainer
assembly (:mod:`fisherlab.regularisers.loss`) appends their rows to the batch and runs one
forward on ``2B`` examples, so DDP and gradient checkpointing see a single forward.
Called directly, a term runs the view's forward itself. Every random view draws from its
own generator seeded with ``step_seed(seed, step)``; only dropout uses the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from fisherlab.fisher.outputs import Categorical, OutputKind
from fisherlab.regularisers.base import (
    RegulariserError,
    batch_size,
    forward_outputs,
    resolve_output,
)
from fisherlab.regularisers.resegment import Resegment
from fisherlab.regularisers.views import Dropout, EmbeddingNoise, ParameterNoise, View, ViewRows
from fisherlab.torch_utils import RNGSnapshot, unwrap_model

DIVERGENCES = ("sym_kl", "kl")
REDUCTIONS = ("batchmean", "rowmean")
TOKEN_KINDS = ("tagging", "mlm")


# --------------------------------------------------------------------------------------
# divergences
# --------------------------------------------------------------------------------------
def row_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """``[N]``: ``KL(p || q)`` per row, in float32 or wider; classes with ``p = 0`` contribute 0."""
    dtype = torch.promote_types(p_logits.dtype, torch.float32)
    log_p = torch.log_softmax(p_logits.to(dtype), dim=-1)
    log_q = torch.log_softmax(q_logits.to(dtype), dim=-1)
    support = torch.isfinite(log_p)
    log_p = log_p.masked_fill(~support, 0.0)
    log_q = log_q.masked_fill(~support, 0.0)
    return (log_p.exp() * (log_p - log_q)).masked_fill(~support, 0.0).sum(-1)


def factor_divergence(clean: Sequence[Categorical], view: Sequence[Categorical], size: int, *,
                      divergence: str = "sym_kl", stop_grad: bool = False,
                      reduction: str = "batchmean") -> Tensor:
    """Reduce per-row divergences between matching factors (same rows, same ``example``)."""
    if divergence not in DIVERGENCES:
        raise RegulariserError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    if reduction not in REDUCTIONS:
        raise RegulariserError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    if len(clean) != len(view):
        raise RegulariserError(f"the views have different factors: {[f.name for f in clean]} vs "
                               f"{[f.name for f in view]}")
    total = None
    for a, b in zip(clean, view, strict=True):
        if a.logits.shape != b.logits.shape:
            raise RegulariserError(f"factor {a.name!r}: clean rows {tuple(a.logits.shape)} and view rows "
                                   f"{tuple(b.logits.shape)} do not match")
        p = a.logits.detach() if stop_grad else a.logits
        q = b.logits
        rows = row_kl(p, q) if divergence == "kl" else 0.5 * (row_kl(p, q) + row_kl(q, p))
        if reduction == "batchmean":
            value = rows.sum() / size
        else:
            value = rows.mean() if rows.numel() else rows.sum()
        total = value if total is None else total + value
    if total is None:
        raise RegulariserError("no factors to compare")
    return total


# --------------------------------------------------------------------------------------
# the term
# --------------------------------------------------------------------------------------
class Consistency:
    """``weight * D(p_clean, p_view)`` (module docstring)."""

    def __init__(self, view: View, divergence: str = "sym_kl", stop_grad: bool = False, weight: float = 1.0,
                 reduction: str = "batchmean", output: str | None = None) -> None:
        if not isinstance(view, View):
            raise RegulariserError(f"Consistency: view must be a View (Dropout(), EmbeddingNoise(), "
                                   f"ParameterNoise(), Resegment(...)); got {view!r}")
        if divergence not in DIVERGENCES:
            raise RegulariserError(f"Consistency: unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
        if reduction not in REDUCTIONS:
            raise RegulariserError(f"Consistency: unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        if not (math.isfinite(weight) and weight >= 0):
            raise RegulariserError(f"Consistency: weight must be a finite number >= 0; got {weight!r}")
        self.view, self.divergence, self.stop_grad = view, divergence, bool(stop_grad)
        self.weight, self.reduction, self.output = float(weight), reduction, output
        self.name = f"consistency.{view.name}"
        self.fusable = view.fusable

    def __repr__(self) -> str:
        return (f"Consistency(view={self.view!r}, divergence={self.divergence!r}, stop_grad={self.stop_grad}, "
                f"weight={self.weight}, reduction={self.reduction!r})")

    def rows(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> ViewRows:
        return self.view.rows(model, batch, step)

    def _view_outputs(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> tuple[Any, ViewRows]:
        rows = self.rows(model, batch, step)
        size = batch_size(rows.batch)
        with rows.context(model, 0, size):
            return forward_outputs(unwrap_model(model), rows.batch), rows

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any], outputs: Any = None, *, step: int = 0,
                 rng: RNGSnapshot | None = None, view_outputs: Any = None, view_rows: ViewRows | None = None,
                 **_: Any) -> Tensor:
        """The weighted divergence. ``outputs``: the clean forward on ``batch`` (its own forward
        when None); ``view_outputs``/``view_rows``: the view's rows of a fused forward."""
        kind, clean, view = self.factors(model, batch, outputs, step=step, rng=rng, view_outputs=view_outputs,
                                         view_rows=view_rows)
        value = factor_divergence(clean, view, batch_size(batch), divergence=self.divergence,
                                  stop_grad=self.stop_grad, reduction=self.reduction)
        return self.weight * value

    def factors(self, model: torch.nn.Module, batch: Mapping[str, Any], outputs: Any = None, *, step: int = 0,
                rng: RNGSnapshot | None = None, view_outputs: Any = None,
                view_rows: ViewRows | None = None) -> tuple[OutputKind, list[Categorical], list[Categorical]]:
        """``(output kind, clean factors, view factors)``: the two predictive distributions,
        row-matched (running the clean and/or view forward when not given)."""
        inner = unwrap_model(model)
        if isinstance(self.view, ParameterNoise):
            if outputs is None or rng is None:
                rng = RNGSnapshot(inner)
                outputs = forward_outputs(inner, batch)
            view_outputs = self.view.perturbed_outputs(model, batch, step, rng)
        elif outputs is None:
            outputs = forward_outputs(inner, batch)
        if view_outputs is None:
            view_outputs, view_rows = self._view_outputs(model, batch, step)
        kind = resolve_output(model, self.output, outputs, batch)
        if view_rows is not None and view_rows.alignment is not None:
            clean, view = self._aligned_factors(kind, outputs, view_outputs, view_rows)
        else:
            clean = kind.factors(outputs, batch)
            view = kind.factors(view_outputs, batch)
        return kind, list(clean), list(view)

    def _aligned_factors(self, kind: OutputKind, outputs: Any, view_outputs: Any,
                         rows: ViewRows) -> tuple[list[Categorical], list[Categorical]]:
        """Resegmented views: sentence-level heads compare as usual; token-level heads compare
        the first sub-token of each word present in both views."""
        if kind.name in ("classification", "multiple_choice"):
            return kind.factors(outputs, None), kind.factors(view_outputs, None)
        if kind.name not in TOKEN_KINDS:
            raise RegulariserError(f"Resegment cannot align output {kind.name!r} between segmentations "
                                   "(supported: classification, tagging, mlm)")
        logits, view_logits = outputs["logits"], view_outputs["logits"]
        ex, pos, vpos = [], [], []
        for b, (clean_pos, view_pos) in enumerate(rows.alignment or []):
            ex.extend([b] * len(clean_pos))
            pos.extend(clean_pos)
            vpos.extend(view_pos)
        device = logits.device
        ex_t = torch.tensor(ex, dtype=torch.long, device=device)
        return ([Categorical("token", logits[ex_t, torch.tensor(pos, device=device)], ex_t)],
                [Categorical("token", view_logits[ex_t, torch.tensor(vpos, device=device)], ex_t)])


VIEWS: dict[str, type[View]] = {cls.name: cls for cls in (Dropout, EmbeddingNoise, ParameterNoise, Resegment)}

__all__ = ["Consistency", "DIVERGENCES", "Dropout", "EmbeddingNoise", "ParameterNoise", "REDUCTIONS",
           "Resegment", "VIEWS", "View", "ViewRows", "factor_divergence", "row_kl"]
