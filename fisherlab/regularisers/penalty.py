"""The Fisher penalty (Jastrzebski et al., 2021).

With labels ``y_i`` sampled from the model (a seeded generator, re-drawn every step)
and ``g_i = grad_theta log p(y_i | x_i)`` over the *trainable* parameters,

    penalty = alpha * s * || (1/B) sum_i g_i ||^2,      s = B (``scaled=True``) or 1.

With ``s = B`` this is ``||sum_i g_i||^2 / B``, the ``batch`` estimator of tr(F)
(unbiased: the scores have zero mean), so ``alpha`` means the same thing whatever
the per-device batch size; ``scaled=False`` is the original, unscaled proxy. For
token-level heads ``log p(y_i|x_i)`` sums over the example's rows (tokens).

Its gradient is ``2 alpha s H g_bar`` (``H`` the Hessian of the mean sampled-label
NLL). Two ways to get it:

* ``double_backprop``: ``g_bar`` with ``create_graph=True``; the Trainer's backward
  differentiates through it. Needs eager attention (fused SDPA/flash kernels have
  no double backward): refused with a clear message otherwise.
* ``finite_difference``: ``H g ~ [grad L(theta + r g) - grad L(theta)] / r`` with
  ``r = h / ||g||`` (a parameter step of length ``h``): two ordinary backward
  passes, any attention backend. The perturbed forward replays the dropout masks
  of the forward at ``theta`` (global RNG state replay) so the difference sees only
  the parameter step. ``theta`` is never modified in place: the perturbed values
  are swapped into the modules and the original Parameter objects put back, so it
  is restored exactly. The returned term has the penalty's value and the
  finite-difference gradient (a detached linear surrogate). Cost: the forward at
  ``theta`` is shared with the task loss; ``task_at="theta"`` then needs three
  backward passes (g, perturbed, task), exact task gradient. ``task_at="perturbed"``
  (and ``"auto"``, the default, inside :func:`fisherlab.regularisers.regularised_loss`
  unless gradient checkpointing is on) evaluates the task loss at the perturbed point
  ``theta + r g`` in the same forward as the perturbed penalty loss, so one backward
  serves both: two forwards and two backwards per step, with the task gradient moved by
  ``O(h)`` -- the order of the finite-difference error itself.

Under DDP every rank penalises the penalty of its own per-device batch (its own
``B``); DDP averages the gradients, so the quantity penalised is the mean over
ranks of the per-device penalties -- with ``scaled=True`` each is an unbiased
estimate of tr(F), so the mean is too. Forwards whose graph is never back-propagated
through DDP's hooks (``g``, the ``task_at="theta"`` perturbed pass) run on the unwrapped
module; the ``task_at="perturbed"`` pass carries the task loss and goes through the
wrapper. Either way the perturbed tensors are functions of the parameters, so DDP's
all-reduce happens once, in the Trainer's backward (tested with 2 gloo ranks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from fisherlab.fisher.outputs import OutputKind
from fisherlab.fisher.precision import autocast_forward, full_precision
from fisherlab.regularisers.base import (
    RegulariserError,
    batch_size,
    forward_outputs,
    resolve_output,
)
from fisherlab.torch_utils import (
    RNGSnapshot,
    check_autograd_grad_ok,
    slice_batch,
    step_seed,
    swapped_parameters,
    trainable_parameters,
    unwrap_model,
    uses_gradient_checkpointing,
)

METHODS = ("finite_difference", "double_backprop")
TASK_AT = ("auto", "theta", "perturbed")
EAGER_ONLY = ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


class FisherPenalty:
    """``alpha * s * ||g_bar||^2`` with model-sampled labels (module docstring).

    ``alpha``: weight. ``method``: ``finite_difference`` (default) or ``double_backprop``.
    ``scaled``: ``s = B`` (unbiased tr(F) estimate; default) or ``s = 1`` (original).
    ``h``: length of the finite-difference parameter step. ``sub_batch``: use only the
    first ``n`` examples (int) or that fraction of the batch (float in (0, 1]).
    ``seed``: label sampling; step ``t`` draws with ``step_seed(seed, t)``.
    ``output``: output kind name, inferred from the model when None.
    """

    name = "fisher_penalty"
    fusable = False

    def __init__(self, alpha: float = 0.01, method: str = "finite_difference", *, scaled: bool = True,
                 h: float = 1e-3, sub_batch: int | float | None = None, seed: int = 0,
                 output: str | None = None, task_at: str = "auto") -> None:
        if method not in METHODS:
            raise RegulariserError(f"FisherPenalty: unknown method {method!r}; expected one of {METHODS}")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise RegulariserError(f"FisherPenalty: alpha must be a finite number >= 0; got {alpha!r}")
        if not (math.isfinite(h) and h > 0):
            raise RegulariserError(f"FisherPenalty: h must be > 0; got {h!r}")
        if sub_batch is not None:
            if isinstance(sub_batch, bool) or not (
                    (isinstance(sub_batch, int) and sub_batch >= 1)
                    or (isinstance(sub_batch, float) and 0 < sub_batch <= 1)):
                raise RegulariserError("FisherPenalty: sub_batch must be an int >= 1 (examples) or a float in "
                                       f"(0, 1] (fraction); got {sub_batch!r}")
        self.alpha, self.method, self.scaled, self.h = float(alpha), method, bool(scaled), float(h)
        if task_at not in TASK_AT:
            raise RegulariserError(f"FisherPenalty: unknown task_at {task_at!r}; expected one of {TASK_AT}")
        if task_at == "perturbed" and (method != "finite_difference" or sub_batch is not None):
            raise RegulariserError("FisherPenalty: task_at='perturbed' needs method='finite_difference' and "
                                   "no sub_batch")
        self.sub_batch, self.seed, self.output, self.task_at = sub_batch, int(seed), output, task_at

    def __repr__(self) -> str:
        return (f"FisherPenalty(alpha={self.alpha}, method={self.method!r}, scaled={self.scaled}, h={self.h}, "
                f"sub_batch={self.sub_batch}, seed={self.seed}, task_at={self.task_at!r})")

    def takes_task_forward(self, model: torch.nn.Module) -> bool:
        """Whether this step should use :meth:`with_task` (the cheaper shared finite difference;
        never under autocast, where the finite difference needs its own float32 forwards)."""
        if self.method != "finite_difference" or self.sub_batch is not None or self.task_at == "theta":
            return False
        if autocast_forward(model):
            if self.task_at == "perturbed":
                raise RegulariserError("FisherPenalty(task_at='perturbed') cannot be used under autocast "
                                       "(bf16/fp16): the finite difference runs its own float32 forwards there; "
                                       "use task_at='auto' or 'theta'")
            return False
        checkpointing = uses_gradient_checkpointing(model)
        if checkpointing and self.task_at == "perturbed":
            raise RegulariserError("FisherPenalty(task_at='perturbed') cannot be used with gradient "
                                   "checkpointing (the recomputed forward would use the unperturbed "
                                   "parameters); use task_at='theta' (or 'auto')")
        return not checkpointing

    # -- the pieces both finite-difference paths share ------------------------------------------
    def _trainable(self, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        params = trainable_parameters(model)
        if not params:
            raise RegulariserError("FisherPenalty: the model has no trainable parameters")
        check_autograd_grad_ok(model, f"FisherPenalty(method={self.method!r})", RegulariserError)
        return params

    def _sampled_nll(self, model: torch.nn.Module, batch: Mapping[str, Any], outputs: Any,
                     step: int) -> tuple[OutputKind, Any, Tensor]:
        """``(kind, labels, loss)``: labels drawn from the model at this step, ``loss`` their
        mean negative log-likelihood on ``outputs`` (scalar, with the outputs' graph)."""
        kind = resolve_output(model, self.output, outputs, batch)
        labels = kind.sample(outputs, batch, self.generator(step))
        return kind, labels, -kind.log_prob(outputs, batch, labels).mean()

    @staticmethod
    def _score_gradient(loss: Tensor, values: Sequence[Tensor], retain_graph: bool) -> tuple[list[Tensor], float, float]:
        """``(g, ||g||^2, ||g||)``: the detached gradient of ``loss`` per parameter (zeros where
        unused) and its squared norm and norm, accumulated in float64."""
        grads = torch.autograd.grad(loss, list(values), retain_graph=retain_graph, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(values, grads, strict=True)]
        sq = float(sum(g.double().pow(2).sum() for g in grads))
        return grads, sq, math.sqrt(sq)

    def _scale(self, size: int) -> float:
        return self.alpha * (size if self.scaled else 1.0)

    # -- the two ways to compute the term -----------------------------------------------------
    def with_task(self, model: torch.nn.Module, batch: Mapping[str, Any], outputs: Any,
                  forward: Any, *, step: int = 0, rng: RNGSnapshot,
                  retain_graph: bool = False) -> tuple[Tensor, Tensor]:
        """``(task loss at theta + r g, penalty term)``: the finite difference with the task loss
        moved to the perturbed point, so one backward serves both (2 forwards + 2 backwards).

        ``outputs`` come from the forward at ``theta`` (whose task-loss graph is then never
        back-propagated), ``rng`` from just before it, ``forward(model, batch) -> (loss,
        outputs)`` computes the task loss. The total gradient is ``grad L_task(theta + r g)
        + 2 alpha s [grad L(theta + r g) - grad L(theta)] / r``: the task gradient moves by
        ``O(h)``, the same order as the finite-difference error of the penalty gradient.
        """
        params = self._trainable(model)
        names, values = list(params), list(params.values())
        kind, labels, loss = self._sampled_nll(model, batch, outputs, step)
        grads, sq, norm = self._score_gradient(loss, values, retain_graph)
        scale = self._scale(batch_size(batch))
        value = loss.new_tensor(scale * sq)
        if norm == 0.0 or scale == 0.0:
            task_loss, _ = forward(model, batch)
            return task_loss, value
        r = self.h / norm
        shifted = {k: p + r * g for k, p, g in zip(names, values, grads, strict=True)}
        with swapped_parameters(unwrap_model(model), shifted, RegulariserError), rng.replay():
            task_loss, shifted_outputs = forward(model, batch)
            shifted_loss = -kind.log_prob(shifted_outputs, batch, labels).mean()
        c = 2.0 * scale / r
        linear = sum((g * p).sum() for g, p in zip(grads, values, strict=True))
        surrogate = c * (shifted_loss - shifted_loss.detach()) - c * (linear - linear.detach())
        return task_loss, value + surrogate

    def generator(self, step: int) -> torch.Generator:
        """The label sampler of training step ``step`` (CPU, so CPU and GPU draw the same labels)."""
        return torch.Generator(device="cpu").manual_seed(step_seed(self.seed, step))

    def _sub_size(self, size: int) -> int:
        if self.sub_batch is None:
            return size
        if isinstance(self.sub_batch, float):
            return max(1, int(round(self.sub_batch * size)))
        return min(size, self.sub_batch)

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any], outputs: Any = None, *,
                 step: int = 0, rng: RNGSnapshot | None = None, **_: Any) -> Tensor:
        """The penalty term for this step (its value is the penalty; its gradient is the penalty's).

        ``outputs``: the model's outputs on ``batch`` at the current parameters, with their
        autograd graph, to share the forward; ``rng``: the RNG states taken just before that
        forward (needed by ``finite_difference`` to replay its dropout masks). Without them
        (or with a sub-batch) the penalty runs its own forward.
        """
        params = self._trainable(model)
        names, values = list(params), list(params.values())
        if self.method == "double_backprop":
            attn = getattr(getattr(unwrap_model(model), "config", None), "_attn_implementation", None)
            if attn in EAGER_ONLY:
                raise RegulariserError(
                    f"FisherPenalty(method='double_backprop') needs eager attention, but the model uses "
                    f"attn_implementation={attn!r} (its fused kernels have no double backward). Load the "
                    "model with attn_implementation='eager', or use method='finite_difference'.")
        if self.method == "finite_difference" and autocast_forward(model):
            # 16-bit rounding of the two forwards does not cancel in [grad(theta + r g) - grad(theta)] / r
            # (measured: the bf16 gradient's cosine to float32 was 0.23); both run in float32 instead
            with full_precision(model):
                return self._term(model, batch, None, step=step, rng=None,
                                               names=names, values=values)
        return self._term(model, batch, outputs, step=step, rng=rng, names=names, values=values)

    def _term(self, model: torch.nn.Module, batch: Mapping[str, Any], outputs: Any, *, step: int,
                           rng: RNGSnapshot | None, names: list[str], values: list[Tensor]) -> Tensor:
        size = batch_size(batch)
        n = self._sub_size(size)
        own_forward = outputs is None or n < size or (self.method == "finite_difference" and rng is None)
        inner = unwrap_model(model)
        if own_forward:
            batch = slice_batch(batch, 0, n) if n < size else batch
            rng = RNGSnapshot(inner)
            outputs = forward_outputs(inner, batch)
        kind, labels, loss = self._sampled_nll(model, batch, outputs, step)
        scale = self._scale(n)
        if self.method == "double_backprop":
            grads = torch.autograd.grad(loss, values, create_graph=True, allow_unused=True)
            sq = sum((g.pow(2).sum() for g in grads if g is not None), start=loss.new_zeros(()))
            return scale * sq
        grads, sq, norm = self._score_gradient(loss, values, retain_graph=not own_forward)
        value = loss.new_tensor(scale * sq)
        if norm == 0.0 or scale == 0.0:
            return value + sum(p.sum() * 0.0 for p in values)
        r = self.h / norm
        shifted = {k: (p.detach() + r * g).requires_grad_(True) for k, p, g in zip(names, values, grads, strict=True)}
        assert rng is not None
        with swapped_parameters(inner, shifted, RegulariserError), rng.replay():
            shifted_outputs = forward_outputs(inner, batch)
            shifted_loss = -kind.log_prob(shifted_outputs, batch, labels).mean()
            shifted_grads = torch.autograd.grad(shifted_loss, [shifted[k] for k in names], allow_unused=True)
        surrogate = loss.new_zeros(())
        for p, g, g2 in zip(values, grads, shifted_grads, strict=True):
            g2 = torch.zeros_like(p) if g2 is None else g2
            hvp = (g2 - g) / r
            surrogate = surrogate + (2.0 * scale * hvp.detach() * p).sum()
        return value + (surrogate - surrogate.detach())


__all__ = ["EAGER_ONLY", "METHODS", "TASK_AT", "FisherPenalty"]
