"""``nn.Linear``: per-example ``||sum_r d_r x_r^T||^2`` (materialise or Gram) and bias norms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fisherlab.fisher.persample.kernels import (
    any_live,
    bias_sq_norms,
    call_input,
    cat_calls,
    linear_sq_norms,
)
from fisherlab.fisher.persample.registry import Call, register_sampler


@register_sampler(nn.Linear)
def linear_sampler(module: nn.Module, calls: Sequence[Call], batch_size: int, method: str) -> dict[str, Tensor]:
    if not any_live(calls):
        return {}
    with torch.no_grad():
        x, d = cat_calls(calls, batch_size, call_input)
        norms = {"weight": linear_sq_norms(x, d, method)}
        if module.bias is not None:
            norms["bias"] = bias_sq_norms(d)
    return norms


def register_linear_sampler(*module_types: type) -> None:
    """Measure ``module_types`` (modules computing ``x W^T + b`` on their first input, with
    ``weight``/``bias`` parameters) like ``nn.Linear``."""
    register_sampler(*module_types)(linear_sampler)


__all__ = ["linear_sampler", "register_linear_sampler"]
