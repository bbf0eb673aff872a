"""L2 towards zero or towards each parameter's value when first trainable."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from fisherlab.regularisers.base import RegulariserError
from fisherlab.torch_utils import trainable_parameters, unwrap_model


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


__all__ = ["L2"]
