"""Torch-side utilities, one of each: unwrapping, devices, seeds, batches, modes, RNG, swaps.

Everything on the training side (blocks, fisher, regularisers, hf, tasks) that needs one
of these imports it from here; nothing here imports another fisherlab module except
:mod:`fisherlab.errors`, so this module sits at the bottom of the training side.

* :func:`unwrap_model` -- the bare model inside DDP / DataParallel / FSDP / DeepSpeed /
  ``torch.compile`` wrappers (``accelerate.utils.extract_model_from_parallel``).
* :func:`cuda_devices`, :func:`model_device`, :func:`dist_info`, :func:`to_device`.
* :func:`mix_seed` / :func:`step_seed` -- well-mixed 63-bit seeds from integers.
* :func:`model_inputs`, :func:`batch_size_of`, :func:`slice_batch` -- batch dictionaries.
* :func:`preserved_modes` -- put every module's train/eval flag (and optionally every
  ``requires_grad`` flag) back as found.
* :class:`RNGSnapshot`, :func:`swapped_parameters`, :func:`trainable_parameters`,
  :func:`check_autograd_grad_ok` -- what the regularisers' extra forwards need.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Batch fields that carry labels (used by estimators/losses, never passed to the model).
LABEL_KEYS = ("labels", "label", "start_positions", "end_positions")
# Batch fields that describe the raw text for consistency views (never passed to the model).
TEXT_KEYS = ("words", "word_ids")


# --------------------------------------------------------------------------------------
# models and devices
# --------------------------------------------------------------------------------------
def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside its wrappers: ``torch.compile`` (``_orig_mod``), DDP, DataParallel,
    FSDP and DeepSpeed engines (``accelerate.utils.extract_model_from_parallel``). Names and
    attributes (``config``, ``heads``, ``named_parameters``) are then the bare model's, and
    extra forwards bypass DDP's gradient hooks. Repeated until nothing is left to strip, so
    nested wrappers (DDP around a compiled module) come off too."""
    from accelerate.utils import extract_model_from_parallel

    while True:
        inner = extract_model_from_parallel(model, keep_torch_compile=False)
        if inner is model:
            return model
        model = inner


def cuda_devices(model: torch.nn.Module) -> list[int]:
    """Sorted CUDA device indices holding the model's parameters (empty on CPU)."""
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` under an initialised ``torch.distributed``, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (tensors, possibly nested in dicts/lists/tuples) moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# --------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------
def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence: well mixed, stable across versions).
    Each part counts modulo 2**32."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """The seed of (component seed, training step, stream): same inputs, same labels/noise."""
    return mix_seed(seed, step, stream)


# --------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------
def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch as the model accepts it: no label fields (:data:`LABEL_KEYS`), no raw-text
    fields (:data:`TEXT_KEYS`)."""
    return {k: v for k, v in batch.items() if k not in LABEL_KEYS and k not in TEXT_KEYS}


def batch_size_of(batch: Mapping[str, Any], error: type[Exception] = ValueError) -> int:
    """Number of examples: the leading dimension of ``input_ids``/``attention_mask``/
    ``inputs_embeds``, else of the first non-scalar tensor; ``error`` is raised without one."""
    for key in ("input_ids", "attention_mask", "inputs_embeds"):
        value = batch.get(key)
        if isinstance(value, Tensor):
            return int(value.shape[0])
    for value in batch.values():
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise error(f"cannot tell the batch size: no tensor fields in batch (keys {sorted(batch)})")


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


# --------------------------------------------------------------------------------------
# state that must come back exactly as found
# --------------------------------------------------------------------------------------
@contextmanager
def preserved_modes(model: torch.nn.Module, *, requires_grad: bool = False) -> Iterator[None]:
    """Run the body, then put back every module's ``training`` flag (and, with
    ``requires_grad=True``, every parameter's ``requires_grad`` flag) exactly as found."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()] if requires_grad else []
    try:
        yield
    finally:
        for param, flag in flags:
            if param.requires_grad != flag:
                param.requires_grad_(flag)
        for module, mode in modes:
            module.training = mode


class RNGSnapshot:
    """The global CPU (and the model's CUDA) RNG states at one moment, to replay dropout masks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.devices = cuda_devices(model)
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


# --------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------
def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Parameters that require grad, by name (tied parameters once)."""
    return {name: p for name, p in unwrap_model(model).named_parameters() if p.requires_grad}


@contextmanager
def swapped_parameters(model: torch.nn.Module, values: Mapping[str, Tensor],
                       error: type[Exception] = KeyError) -> Iterator[None]:
    """Put ``values[name]`` where each named parameter sits (tied slots included), then put the
    original Parameter objects back. Nothing is written in place, so the parameters (and the
    autograd graphs that saved them) are untouched and restored exactly."""
    model = unwrap_model(model)
    by_id = {id(p): name for name, p in model.named_parameters() if name in values}
    missing = set(values) - set(by_id.values())
    if missing:
        raise error(f"swapped_parameters: no parameters named {sorted(missing)[:5]}")
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


def check_autograd_grad_ok(model: torch.nn.Module, who: str, error: type[Exception] = RuntimeError) -> None:
    """``torch.autograd.grad`` cannot run through reentrant gradient checkpointing: say so."""
    for module in unwrap_model(model).modules():
        if getattr(module, "gradient_checkpointing", False) is True:
            func = getattr(module, "_gradient_checkpointing_func", None)
            reentrant = True
            if isinstance(func, functools.partial):
                reentrant = bool(func.keywords.get("use_reentrant", True))
            if reentrant:
                raise error(
                    f"{who} needs torch.autograd.grad, which reentrant gradient checkpointing does not "
                    "support; enable checkpointing with gradient_checkpointing_kwargs="
                    "{'use_reentrant': False} or turn it off")


def uses_gradient_checkpointing(model: torch.nn.Module) -> bool:
    """Whether any module of the (unwrapped) model has gradient checkpointing switched on."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in unwrap_model(model).modules())


__all__ = [
    "LABEL_KEYS", "RNGSnapshot", "TEXT_KEYS", "batch_size_of", "check_autograd_grad_ok", "cuda_devices",
    "dist_info", "mix_seed", "model_device", "model_inputs", "preserved_modes", "slice_batch", "step_seed",
    "swapped_parameters", "to_device", "trainable_parameters", "unwrap_model", "uses_gradient_checkpointing",
]
