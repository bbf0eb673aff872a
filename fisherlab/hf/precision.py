"""The precision a Trainer trains in, recorded in ``run.json``'s ``env`` by the callbacks.

``TrainingArguments(bf16=True)`` / ``fp16=True`` is a request; what happens depends on the
device: ``accelerate`` wraps the model's ``forward`` in ``torch.autocast`` when it uses
native AMP (bf16 on CPU and GPU, fp16 on GPU only, with a ``GradScaler``), and on CPU it
silently trains fp16 runs in float32. :func:`trainer_precision` reads what the Trainer's
accelerator actually does; :func:`record_precision` writes it into ``env`` (additively:
``precision``, ``mixed_precision``, ``grad_scaler``). The probe's measurements record the
precision they saw from inside the forward (``fisher.jsonl``'s ``precision``).
"""

from __future__ import annotations

from typing import Any

import torch

from fisherlab.fisher.precision import AUTOCAST_NAMES, dtype_name

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def trainer_precision(trainer: Any, model: torch.nn.Module) -> dict[str, Any]:
    """``{"precision", "mixed_precision", "grad_scaler"}`` of a (built) Trainer: ``precision``
    is ``bf16-autocast``/``fp16-autocast`` when the accelerator autocasts the forward, else the
    parameters' dtype; ``mixed_precision`` the accelerator's setting (``no``, ``bf16``,
    ``fp16``); ``grad_scaler`` whether a loss scaler scales the training backward."""
    accelerator = getattr(trainer, "accelerator", None)
    mixed = str(getattr(accelerator, "mixed_precision", "no") or "no")
    native = bool(getattr(accelerator, "native_amp", False))
    param = next(iter(model.parameters()), None)
    if native and mixed in _AMP_DTYPES:
        precision = AUTOCAST_NAMES[_AMP_DTYPES[mixed]]
    else:
        precision = dtype_name(param.dtype) if param is not None else None
    return {"precision": precision, "mixed_precision": mixed,
            "grad_scaler": getattr(accelerator, "scaler", None) is not None}


def record_precision(writer: Any, trainer: Any, model: torch.nn.Module, state: Any) -> None:
    """Add :func:`trainer_precision` to ``run.json``'s ``env`` (main process; no-op without a
    writer or when already recorded)."""
    if writer is None or not getattr(state, "is_world_process_zero", True) or not hasattr(writer, "update_info"):
        return
    env = dict(getattr(writer, "info", {}).get("env") or {})
    found = trainer_precision(trainer, model)
    if all(env.get(k) == v for k, v in found.items()):
        return
    env.update(found)
    writer.update_info(env=env)


__all__ = ["record_precision", "trainer_precision"]
