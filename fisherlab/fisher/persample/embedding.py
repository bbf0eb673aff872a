"""``nn.Embedding``: per-example ``sum_v ||sum_{t: id_t = v} d_t||^2``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fisherlab.fisher.persample.kernels import any_live, call_input, rows
from fisherlab.fisher.persample.registry import Call, register_sampler


def _embedding_supports(module: nn.Module) -> str | None:
    if module.max_norm is not None:
        return "nn.Embedding with max_norm renormalises its weight in place"
    return None


@register_sampler(nn.Embedding, supports=_embedding_supports, expand_shared=True)
def embedding_sampler(module: nn.Embedding, calls: Sequence[Call], batch_size: int, method: str) -> dict[str, Tensor]:
    """Per example: ``sum_v ||sum_{t: id_t = v} d_t||^2`` (padding_idx rows get no gradient)."""
    if not any_live(calls):
        return {}
    with torch.no_grad():
        ids = torch.cat([call_input(c).reshape(batch_size, -1) for c in calls if c.grad is not None], 1)
        d = torch.cat([rows(c.grad, batch_size) for c in calls if c.grad is not None], 1)
        if module.padding_idx is not None:
            d = d.masked_fill((ids == module.padding_idx).unsqueeze(-1), 0)
        if method == "gram":
            same = ids.unsqueeze(2) == ids.unsqueeze(1)
            norms = (torch.bmm(d, d.transpose(1, 2)) * same).sum((1, 2))
        else:
            # Segment-sum the rows of each (example, token id) pair, then square.
            keys = ids + torch.arange(batch_size, device=ids.device).unsqueeze(1) * module.num_embeddings
            unique, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
            summed = d.new_zeros(unique.numel(), d.shape[-1]).index_add_(0, inverse, d.reshape(-1, d.shape[-1]))
            owner = torch.div(unique, module.num_embeddings, rounding_mode="floor")
            norms = d.new_zeros(batch_size).index_add_(0, owner, summed.square().sum(1))
    return {"weight": norms}


def register_embedding_sampler(*module_types: type) -> None:
    """Measure ``module_types`` like ``nn.Embedding`` (``weight[ids]`` lookups with
    ``num_embeddings``, ``padding_idx`` and ``max_norm``)."""
    register_sampler(*module_types, supports=_embedding_supports, expand_shared=True)(embedding_sampler)


__all__ = ["embedding_sampler", "register_embedding_sampler"]
