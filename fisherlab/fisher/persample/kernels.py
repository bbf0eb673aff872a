"""Einsum kernels shared by the per-layer samplers (rows of an example are consecutive)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from fisherlab.fisher.persample.registry import Call


def wide(t: Tensor) -> Tensor:
    """``t`` in float32 when it is 16-bit (autocast activations and gradients), else as is:
    per-example products and sums are accumulated in float32 or wider."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def rows(t: Tensor, batch_size: int, feature_dims: int = 1) -> Tensor:
    """[D, ..., *features] -> [B, R, prod(features)] (16-bit upcast to float32): rows of an
    example are consecutive."""
    t = wide(t)
    features = 1
    for size in t.shape[t.dim() - feature_dims:]:
        features *= size
    return t.reshape(batch_size, -1, features)


def linear_sq_norms(x: Tensor, d: Tensor, method: str = "auto") -> Tensor:
    """Per-example ``||sum_r d[b, r] x[b, r]^T||_F^2`` for x [B, R, i], d [B, R, o]."""
    _, rows, n_in = x.shape
    n_out = d.shape[-1]
    x, d = wide(x), wide(d)
    if method == "auto":
        method = "gram" if rows * rows * (n_in + n_out) < rows * n_in * n_out else "materialise"
    if method == "gram":
        return (torch.bmm(x, x.transpose(1, 2)) * torch.bmm(d, d.transpose(1, 2))).sum((1, 2))
    if method == "materialise":
        return torch.bmm(d.transpose(1, 2), x).square().sum((1, 2))
    raise ValueError(f"linear_sq_norms: unknown method {method!r}; expected auto, materialise or gram")


def bias_sq_norms(d: Tensor) -> Tensor:
    return d.sum(1).square().sum(1)


def cat_calls(calls: Sequence[Call], batch_size: int, pick: Callable[[Call], Tensor]) -> tuple[Tensor, Tensor]:
    """Inputs and output-gradients of every call of a module, concatenated along rows."""
    xs, ds = [], []
    for call in calls:
        if call.grad is None:
            continue
        xs.append(rows(pick(call), batch_size))
        ds.append(rows(call.grad, batch_size))
    if len(xs) == 1:
        return xs[0], ds[0]
    return torch.cat(xs, 1), torch.cat(ds, 1)


def call_input(call: Call) -> Tensor:
    return call.args[0] if call.args else next(iter(call.kwargs.values()))


def any_live(calls: Sequence[Call]) -> bool:
    return any(call.grad is not None for call in calls)


__all__ = ["wide", "any_live", "bias_sq_norms", "call_input", "cat_calls", "linear_sq_norms", "rows"]
