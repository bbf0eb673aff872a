"""Which precision a measurement ran in, and what to do with non-finite results.

A model's forward may run in a lower precision than its parameters: inside
``torch.autocast`` (bf16 or fp16), or because ``accelerate`` (a Trainer with
``bf16=True``/``fp16=True``) wrapped the model's ``forward`` in autocast, which is
invisible from outside the forward. :class:`PrecisionRecorder` therefore looks from
*inside*: a forward pre-hook on every module that owns parameters notes the autocast
state it runs under (or, without autocast, that module's parameter dtype). The names:

* ``"float32"``, ``"float64"``, ``"bfloat16"``, ``"float16"``: no autocast; the dtype of
  the parameters (pure bf16/fp16 weights give ``bfloat16``/``float16``);
* ``"bf16-autocast"``, ``"fp16-autocast"``: the forward ran under autocast to that dtype
  (matmuls in 16 bits, reductions such as softmax/layer norm in float32);
* several names joined by ``+`` (sorted) when modules of one measurement differed.

Whatever the forward's precision, fisherlab accumulates per-example squared norms in
float32 or wider (the samplers run with autocast off, upcasting 16-bit inputs) and sums
over examples in float64. A non-finite tr(F) (fp16 overflow in the model's own backward,
a diverged model) is never written silently: :func:`nonfinite_blocks` names the blocks,
the caller warns with :class:`NonFiniteWarning` and records ``nonfinite: true``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fisherlab.torch_utils import model_device, unwrap_model

AUTOCAST_NAMES = {torch.bfloat16: "bf16-autocast", torch.float16: "fp16-autocast"}


class NonFiniteWarning(UserWarning):
    """A tr(F) estimate is NaN or infinite (recorded with ``nonfinite: true``)."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).replace("torch.", "")


def current_precision(device_type: str, param_dtype: torch.dtype) -> str:
    """The precision a forward started *now* on ``device_type`` would run in, given the
    parameters' dtype: the autocast name when autocast is on, else the parameter dtype."""
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return AUTOCAST_NAMES.get(dtype, f"{dtype_name(dtype)}-autocast")
    return dtype_name(param_dtype)


class PrecisionRecorder:
    """Context manager noting the precision every parameter-owning module's forward ran in.

    >>> with PrecisionRecorder(model) as rec:
    ...     model(**batch)
    >>> rec.precision          # e.g. "bf16-autocast"; None when no forward ran

    Hooks are pre-hooks on the unwrapped model's modules (wrappers looked through) and are
    removed on exit. Cost: one Python call per module per forward.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = unwrap_model(model)
        self.seen: set[str] = set()
        self._handles: list[Any] = []

    def __enter__(self) -> PrecisionRecorder:
        for module in self.model.modules():
            params = [p for p in module._parameters.values() if p is not None]
            if params and params[0].is_floating_point():
                self._handles.append(module.register_forward_pre_hook(self._hook(params[0])))
        return self

    def _hook(self, param: torch.Tensor):
        def hook(module: nn.Module, args: Any) -> None:
            self.seen.add(current_precision(param.device.type, param.dtype))

        return hook

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def precision(self) -> str | None:
        return "+".join(sorted(self.seen)) if self.seen else None

    @property
    def low_precision(self) -> bool:
        """Whether any module ran in 16 bits (autocast or 16-bit parameters)."""
        return any(name.startswith(("bf16", "fp16", "bfloat16", "float16")) for name in self.seen)


def autocast_forward(model: nn.Module) -> bool:
    """Whether a forward of ``model`` called now runs under autocast: an enclosing
    ``torch.autocast`` on the model's device, or ``accelerate``'s autocast wrapper on the
    (unwrapped) model's ``forward`` (a Trainer with ``bf16``/``fp16`` native AMP)."""
    inner = unwrap_model(model)
    return torch.is_autocast_enabled(model_device(inner).type) or "_original_forward" in inner.__dict__


@contextmanager
def full_precision(model: nn.Module) -> Iterator[None]:
    """Run the body with autocast off, including inside the model's forward: ``accelerate``'s
    autocast wrapper (``model.forward`` with ``model._original_forward`` kept beside it) is
    taken off the unwrapped model for the body and put back after."""
    inner = unwrap_model(model)
    patched = inner.__dict__.get("forward") if "_original_forward" in inner.__dict__ else None
    if patched is not None:
        inner.forward = inner.__dict__["_original_forward"]
    try:
        with torch.autocast(model_device(inner).type, enabled=False):
            yield
    finally:
        if patched is not None:
            inner.forward = patched


def nonfinite_blocks(traces: Mapping[str, float]) -> list[str]:
    """Blocks whose trace is NaN or infinite."""
    return [name for name, value in traces.items() if not math.isfinite(float(value))]


def warn_nonfinite(who: str, blocks: list[str], precision: str | None, stacklevel: int = 3) -> None:
    """The one warning for a non-finite tr(F): names the blocks, the precision and what to do."""
    hint = ""
    if precision and ("fp16" in precision or "float16" in precision):
        hint = (" The forward ran in fp16, whose range ends at 65504: the model's backward overflowed. "
                "Measure in bf16 or float32 (e.g. probe the model outside fp16 autocast).")
    warnings.warn(f"{who}: tr(F) is not finite for block(s) {blocks} (precision {precision}); recorded "
                  f"with nonfinite=true and not used as a number.{hint}", NonFiniteWarning, stacklevel=stacklevel)


__all__ = ["AUTOCAST_NAMES", "autocast_forward", "full_precision", "NonFiniteWarning", "PrecisionRecorder", "current_precision", "dtype_name",
           "nonfinite_blocks", "warn_nonfinite"]
