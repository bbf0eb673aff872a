"""The ``adapters`` LoRA module (raw ``lora_A``/``lora_B`` matmuls, dropout, scaling) and the
base weights of a LoRA-wrapped Linear; registered on first use so that importing fisherlab
does not import ``adapters``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fisherlab.fisher.persample import registry
from fisherlab.fisher.persample.kernels import any_live, cat_calls, linear_sq_norms
from fisherlab.fisher.persample.linear import linear_sampler
from fisherlab.fisher.persample.registry import Call, register_sampler


# adapters' LoRA: out = dropout(x) @ A^T @ B^T * scaling (composition "add"); registered
# lazily so that importing this module does not import adapters.
def _lora_output(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Tensor | None:
    return output[0] if isinstance(output, tuple) else output


def _lora_supports(module: nn.Module) -> str | None:
    if getattr(module, "use_gating", False):
        return "LoRA with gating (output scaled by a data-dependent gate)"
    if getattr(module, "use_dora", False):
        return "DoRA (magnitude vector used outside the module's forward)"
    if getattr(module, "composition_mode", "add") != "add":
        return f"LoRA composition_mode {module.composition_mode!r}"
    return None


def _lora_capture(module: nn.Module) -> dict[str, nn.Module]:
    dropout = getattr(module, "lora_dropout", None)
    return {"dropped": dropout} if isinstance(dropout, nn.Module) else {}


def _lora_input(call: Call) -> Tensor:
    """The tensor LoRA multiplies by A^T: dropout output if captured, else the input."""
    if "dropped" in call.extras:
        return call.extras["dropped"]
    hidden = call.args[0] if call.args else call.kwargs.get("hidden_states")
    if hidden is None:
        hidden = call.args[1] if len(call.args) > 1 else call.kwargs["layer_input"]
    return hidden


def lora_sampler(module: nn.Module, calls: Sequence[Call], batch_size: int, method: str) -> dict[str, Tensor]:
    """h = x A^T, u = h B^T, y = s u: grad B = s sum d h^T, grad A = s sum (d B) x^T."""
    if not any_live(calls):
        return {}
    with torch.no_grad():
        x, d = cat_calls(calls, batch_size, _lora_input)
        h = x @ module.lora_A.t()
        d_h = d @ module.lora_B
        square = float(module.scaling) ** 2   # scale the norms, not the [B, R, o] gradient
        return {"lora_A": linear_sq_norms(x, d_h, method) * square, "lora_B": linear_sq_norms(h, d, method) * square}


def _lora_linear_supports(module: nn.Module) -> str | None:
    # Base weight/bias of a LoRA-wrapped Linear: the LoRA branch is *added* to the base
    # output, so d s / d(base output) = d s / d(module output) -- except for DoRA.
    if any(getattr(lora, "use_dora", False) for lora in getattr(module, "loras", {}).values()):
        return "DoRA rescales the base output"
    return None


def register_adapters() -> None:
    try:
        from adapters.methods.lora import LoRA, LoRALinearTorch
    except ImportError:  # adapters not installed: nothing to register
        return
    if LoRA not in registry._SAMPLERS:
        register_sampler(LoRA, output=_lora_output, supports=_lora_supports, capture=_lora_capture)(lora_sampler)
    if LoRALinearTorch not in registry._SAMPLERS:
        register_sampler(LoRALinearTorch, supports=_lora_linear_supports)(linear_sampler)


__all__ = ["lora_sampler", "register_adapters"]
