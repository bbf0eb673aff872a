"""Parameter-space regularisers: the Fisher penalty (Jastrzebski et al., 2021) and L2.

Fisher penalty
--------------
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
  (and ``"auto"``, the default, inside :func:`fisherlab.regularise.regularised_loss`
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

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fisherlab.fisher.outputs import (
    LABEL_KEYS,
    OutputKind,
    forward_by_name,
    get_output,
    infer_output,
)

METHODS = ("finite_difference", "double_backprop")
TASK_AT = ("auto", "theta", "perturbed")
EAGER_ONLY = ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# Batch fields that describe the raw text for views (never passed to the model).
TEXT_KEYS = ("words", "word_ids")


class RegulariserError(ValueError):
    """A regulariser cannot be built or applied as asked (the message says why)."""


# --------------------------------------------------------------------------------------
# helpers shared with the consistency views
# --------------------------------------------------------------------------------------
def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP/DataParallel wrapper (extra forwards must bypass DDP)."""
    while hasattr(model, "module") and isinstance(model, (torch.nn.parallel.DistributedDataParallel,
                                                          torch.nn.DataParallel)):
        model = model.module
    return model


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Parameters that require grad, by name (tied parameters once)."""
    return {name: p for name, p in unwrap_model(model).named_parameters() if p.requires_grad}


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch as the model accepts it: no label fields, no raw-text fields."""
    return {k: v for k, v in batch.items() if k not in LABEL_KEYS and k not in TEXT_KEYS}


def batch_size_of(batch: Mapping[str, Any]) -> int:
    for key in ("input_ids", "attention_mask", "inputs_embeds"):
        value = batch.get(key)
        if isinstance(value, Tensor):
            return int(value.shape[0])
    for value in batch.values():
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise RegulariserError(f"cannot tell the batch size: no tensor fields in batch (keys {sorted(batch)})")


def slice_batch(batch: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Examples ``start:stop`` of a batch (tensors and per-example lists); other values kept."""
    size = batch_size_of(batch)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == size:
            out[key] = value[start:stop]
        elif isinstance(value, (list, tuple)) and len(value) == size:
            out[key] = value[start:stop]
        else:
            out[key] = value
    return out


def resolve_output(model: torch.nn.Module, output: str | OutputKind | None, outputs: Any = None,
                   batch: Mapping[str, Any] | None = None) -> OutputKind:
    return get_output(output) if output is not None else infer_output(unwrap_model(model), outputs, batch)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for (component seed, training step, stream): same inputs, same labels/noise."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step) & 0xFFFFFFFF, int(stream)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _cuda_devices(model: torch.nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


class RNGSnapshot:
    """The global CPU (and the model's CUDA) RNG states at one moment, to replay dropout masks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.devices = _cuda_devices(model)
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body with the captured RNG states, then put the current ones back."""
        cpu_now = torch.get_rng_state()
        cuda_now = [torch.cuda.get_rng_state(d) for d in self.devices]
        torch.set_rng_state(self.cpu)
        for d, state in zip(self.devices, self.cuda, strict=True):
            torch.cuda.set_rng_state(state, d)
        try:
            yield
        finally:
            torch.set_rng_state(cpu_now)
            for d, state in zip(self.devices, cuda_now, strict=True):
                torch.cuda.set_rng_state(state, d)


@contextmanager
def swapped_parameters(model: torch.nn.Module, values: Mapping[str, Tensor]) -> Iterator[None]:
    """Put ``values[name]`` where each named parameter sits (tied slots included), then put the
    original Parameter objects back. Nothing is written in place, so the parameters (and the
    autograd graphs that saved them) are untouched and restored exactly."""
    model = unwrap_model(model)
    by_id = {id(p): name for name, p in model.named_parameters() if name in values}
    missing = set(values) - set(by_id.values())
    if missing:
        raise RegulariserError(f"swapped_parameters: no parameters named {sorted(missing)[:5]}")
    slots = []
    for module in model.modules():
        for attr, param in module._parameters.items():
            if param is not None and id(param) in by_id:
                slots.append((module, attr, param))
    try:
        for module, attr, param in slots:
            module._parameters[attr] = values[by_id[id(param)]]
        yield
    finally:
        for module, attr, param in slots:
            module._parameters[attr] = param


def check_autograd_grad_ok(model: torch.nn.Module, who: str) -> None:
    """``torch.autograd.grad`` cannot run through reentrant gradient checkpointing: say so."""
    for module in unwrap_model(model).modules():
        if getattr(module, "gradient_checkpointing", False) is True:
            func = getattr(module, "_gradient_checkpointing_func", None)
            reentrant = True
            if isinstance(func, functools.partial):
                reentrant = bool(func.keywords.get("use_reentrant", True))
            if reentrant:
                raise RegulariserError(
                    f"{who} needs torch.autograd.grad, which reentrant gradient checkpointing does not "
                    "support; enable checkpointing with gradient_checkpointing_kwargs="
                    "{'use_reentrant': False} or turn it off")


def forward_outputs(model: torch.nn.Module, batch: Mapping[str, Any]) -> Any:
    return forward_by_name(model, model_inputs(batch), RegulariserError)


# --------------------------------------------------------------------------------------
# the Fisher penalty
# --------------------------------------------------------------------------------------
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
        """Whether this step should use :meth:`with_task` (the cheaper shared finite difference)."""
        if self.method != "finite_difference" or self.sub_batch is not None or self.task_at == "theta":
            return False
        checkpointing = any(getattr(m, "gradient_checkpointing", False) is True
                            for m in unwrap_model(model).modules())
        if checkpointing and self.task_at == "perturbed":
            raise RegulariserError("FisherPenalty(task_at='perturbed') cannot be used with gradient "
                                   "checkpointing (the recomputed forward would use the unperturbed "
                                   "parameters); use task_at='theta' (or 'auto')")
        return not checkpointing

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
        params = trainable_parameters(model)
        if not params:
            raise RegulariserError("FisherPenalty: the model has no trainable parameters")
        check_autograd_grad_ok(model, "FisherPenalty(method='finite_difference')")
        inner = unwrap_model(model)
        size = batch_size_of(batch)
        kind = resolve_output(model, self.output, outputs, batch)
        labels = kind.sample(outputs, batch, self.generator(step))
        names = list(params)
        values = [params[k] for k in names]
        loss = -kind.log_prob(outputs, batch, labels).mean()
        grads = torch.autograd.grad(loss, values, retain_graph=retain_graph, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(values, grads, strict=True)]
        sq = sum(g.double().pow(2).sum() for g in grads)
        norm = float(sq.sqrt())
        scale = self.alpha * (size if self.scaled else 1.0)
        value = loss.new_tensor(scale * float(sq))
        if norm == 0.0 or scale == 0.0:
            task_loss, _ = forward(model, batch)
            return task_loss, value
        r = self.h / norm
        shifted = {k: p + r * g for k, p, g in zip(names, values, grads, strict=True)}
        with swapped_parameters(inner, shifted), rng.replay():
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
        params = trainable_parameters(model)
        if not params:
            raise RegulariserError("FisherPenalty: the model has no trainable parameters")
        check_autograd_grad_ok(model, f"FisherPenalty(method={self.method!r})")
        if self.method == "double_backprop":
            attn = getattr(getattr(unwrap_model(model), "config", None), "_attn_implementation", None)
            if attn in EAGER_ONLY:
                raise RegulariserError(
                    f"FisherPenalty(method='double_backprop') needs eager attention, but the model uses "
                    f"attn_implementation={attn!r} (its fused kernels have no double backward). Load the "
                    "model with attn_implementation='eager', or use method='finite_difference'.")
        size = batch_size_of(batch)
        n = self._sub_size(size)
        own_forward = outputs is None or n < size or (self.method == "finite_difference" and rng is None)
        inner = unwrap_model(model)
        if own_forward:
            batch = slice_batch(batch, 0, n) if n < size else batch
            rng = RNGSnapshot(inner)
            outputs = forward_outputs(inner, batch)
        kind = resolve_output(model, self.output, outputs, batch)
        labels = kind.sample(outputs, batch, self.generator(step))
        names = list(params)
        values = [params[k] for k in names]
        loss = -kind.log_prob(outputs, batch, labels).mean()
        scale = self.alpha * (n if self.scaled else 1.0)
        if self.method == "double_backprop":
            grads = torch.autograd.grad(loss, values, create_graph=True, allow_unused=True)
            sq = sum((g.pow(2).sum() for g in grads if g is not None), start=loss.new_zeros(()))
            return scale * sq
        grads = torch.autograd.grad(loss, values, retain_graph=not own_forward, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(values, grads, strict=True)]
        sq = sum(g.double().pow(2).sum() for g in grads)
        norm = float(sq.sqrt())
        value = loss.new_tensor(scale * float(sq))
        if norm == 0.0 or scale == 0.0:
            return value + sum(p.sum() * 0.0 for p in values)
        r = self.h / norm
        shifted = {k: (p.detach() + r * g).requires_grad_(True) for k, p, g in zip(names, values, grads, strict=True)}
        assert rng is not None
        with swapped_parameters(inner, shifted), rng.replay():
            shifted_outputs = forward_outputs(inner, batch)
            shifted_loss = -kind.log_prob(shifted_outputs, batch, labels).mean()
            shifted_grads = torch.autograd.grad(shifted_loss, [shifted[k] for k in names], allow_unused=True)
        surrogate = loss.new_zeros(())
        for p, g, g2 in zip(values, grads, shifted_grads, strict=True):
            g2 = torch.zeros_like(p) if g2 is None else g2
            hvp = (g2 - g) / r
            surrogate = surrogate + (2.0 * scale * hvp.detach() * p).sum()
        return value + (surrogate - surrogate.detach())


# --------------------------------------------------------------------------------------
# L2
# --------------------------------------------------------------------------------------
class L2:
    """``weight/2 * ||theta - theta_ref||^2`` over the trainable parameters (gradient
    ``weight * (theta - theta_ref)``). ``to="zero"``: ``theta_ref = 0``; ``to="init"``:
    ``theta_ref`` = each parameter's value the first time it is seen trainable (so blocks
    unfrozen later are anchored at the value they had while frozen). The anchor is kept in
    memory, not in Trainer checkpoints: call :meth:`anchor_from` after resuming."""

    name = "l2"
    fusable = False
    TARGETS = ("zero", "init")

    def __init__(self, weight: float = 0.01, to: str = "zero") -> None:
        if to not in self.TARGETS:
            raise RegulariserError(f"L2: unknown to={to!r}; expected one of {self.TARGETS}")
        if not (math.isfinite(weight) and weight >= 0):
            raise RegulariserError(f"L2: weight must be a finite number >= 0; got {weight!r}")
        self.weight, self.to = float(weight), to
        self.reference: dict[str, Tensor] = {}

    def __repr__(self) -> str:
        return f"L2(weight={self.weight}, to={self.to!r})"

    def anchor_from(self, model: torch.nn.Module, names: Sequence[str] | None = None) -> None:
        """Record the current values of (the named, else all) parameters as ``theta_ref``."""
        for name, p in unwrap_model(model).named_parameters():
            if names is None or name in names:
                self.reference[name] = p.detach().clone()

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any] | None = None, outputs: Any = None,
                 **_: Any) -> Tensor:
        params = trainable_parameters(model)
        if not params:
            raise RegulariserError("L2: the model has no trainable parameters")
        total = None
        for name, p in params.items():
            if self.to == "init":
                if name not in self.reference:
                    self.reference[name] = p.detach().clone()
                diff = p - self.reference[name]
            else:
                diff = p
            term = diff.pow(2).sum()
            total = term if total is None else total + term
        assert total is not None
        return 0.5 * self.weight * total
