"""``nn.LayerNorm``: per-example norms of the affine weight (``x_hat * d``) and bias."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fisherlab.fisher.persample.kernels import any_live, bias_sq_norms, call_input, rows, wide
from fisherlab.fisher.persample.registry import Call, register_sampler


@register_sampler(nn.LayerNorm)
def layer_norm_sampler(module: nn.LayerNorm, calls: Sequence[Call], batch_size: int, method: str) -> dict[str, Tensor]:
    if not any_live(calls) or not module.elementwise_affine:
        return {}
    dims = len(module.normalized_shape)
    with torch.no_grad():
        def normalised(call: Call) -> Tensor:
            return nn.functional.layer_norm(wide(call_input(call)), module.normalized_shape, None, None, module.eps)

        xs, ds = [], []
        for call in calls:
            if call.grad is None:
                continue
            xs.append(rows(normalised(call), batch_size, dims))
            ds.append(rows(call.grad, batch_size, dims))
        x_hat, d = torch.cat(xs, 1), torch.cat(ds, 1)
        norms = {}
        if module.weight is not None:
            norms["weight"] = (x_hat * d).sum(1).square().sum(1)
        if getattr(module, "bias", None) is not None:
            norms["bias"] = bias_sq_norms(d)
    return norms


def register_norm_sampler(*module_types: type) -> None:
    """Measure ``module_types`` like ``nn.LayerNorm``: modules with ``normalized_shape``,
    ``eps``, ``elementwise_affine`` and ``weight``/``bias`` computing
    ``layer_norm(x) * weight + bias`` on their first input."""
    register_sampler(*module_types)(layer_norm_sampler)


__all__ = ["layer_norm_sampler", "register_norm_sampler"]
