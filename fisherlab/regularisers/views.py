"""Second views of a batch for consistency regularisers: R-Drop, R3F, parameter noise.

A :class:`View` gives the rows of its view (:class:`ViewRows`) and a context to enter
around the forward that computes them; fusable views' rows ride along in the task
forward (:mod:`fisherlab.regularisers.loss`). The tokenizer re-segmentation view lives
in :mod:`fisherlab.regularisers.resegment`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fisherlab.regularisers.base import RegulariserError, batch_size, forward_outputs
from fisherlab.torch_utils import (
    RNGSnapshot,
    model_inputs,
    step_seed,
    swapped_parameters,
    trainable_parameters,
    unwrap_model,
    uses_gradient_checkpointing,
)


@dataclass
class ViewRows:
    """A view's rows for a fused forward: ``batch`` (model inputs, no labels), the context
    to enter around the fused forward (given the view's row offset and the fused size), and
    anything the term needs to compare the rows (``alignment`` for token-level Resegment)."""

    batch: dict[str, Any]
    alignment: list[tuple[list[int], list[int]]] | None = None
    view: Any = None
    step: int = 0

    def context(self, model: torch.nn.Module, offset: int, total: int):
        return self.view.context(model, self, offset, total) if self.view is not None else nullcontext()


class View:
    """A second view of the batch. Subclasses set ``name`` and ``fusable``."""

    name = "view"
    fusable = True

    def rows(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> ViewRows:
        """The view's input rows (same number of examples as ``batch``)."""
        return ViewRows(batch=model_inputs(batch), view=self, step=step)

    def context(self, model: torch.nn.Module, rows: ViewRows, offset: int, total: int):
        return nullcontext()

    def params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Dropout(View):
    """R-Drop: the same inputs through a second dropout mask."""

    name = "dropout"


class EmbeddingNoise(View):
    """R3F: noise on the word embeddings (before position embeddings are added)."""

    name = "embedding_noise"
    DISTS = ("uniform", "normal")

    def __init__(self, eps: float = 1e-5, dist: str = "uniform", seed: int = 0) -> None:
        if dist not in self.DISTS:
            raise RegulariserError(f"EmbeddingNoise: unknown dist {dist!r}; expected one of {self.DISTS}")
        if not (math.isfinite(eps) and eps >= 0):
            raise RegulariserError(f"EmbeddingNoise: eps must be a finite number >= 0; got {eps!r}")
        self.eps, self.dist, self.seed = float(eps), dist, int(seed)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "dist": self.dist, "seed": self.seed}

    @contextmanager
    def context(self, model: torch.nn.Module, rows: ViewRows, offset: int, total: int) -> Iterator[None]:
        embeddings = unwrap_model(model).get_input_embeddings()
        if embeddings is None:
            raise RegulariserError("EmbeddingNoise: model.get_input_embeddings() returned None")
        size = batch_size(rows.batch)
        state = {"generator": None}

        def hook(module: torch.nn.Module, args: Any, output: Tensor) -> Tensor:
            if output.shape[0] % total:
                raise RegulariserError(f"EmbeddingNoise: embedding output has {output.shape[0]} rows, not a "
                                       f"multiple of the {total} examples in the batch")
            per = output.shape[0] // total  # >1 for multiple choice (examples x choices)
            if state["generator"] is None:
                state["generator"] = torch.Generator(device=output.device).manual_seed(
                    step_seed(self.seed, rows.step, 1))
            shape = (size * per, *output.shape[1:])
            gen = state["generator"]
            if self.dist == "uniform":
                noise = (torch.rand(shape, generator=gen, device=output.device) * 2 - 1) * self.eps
            else:
                noise = torch.randn(shape, generator=gen, device=output.device) * self.eps
            noise = noise.to(output.dtype)
            pad_before = offset * per
            pad_after = output.shape[0] - pad_before - shape[0]
            full = torch.nn.functional.pad(noise, [0, 0] * (noise.dim() - 1) + [pad_before, pad_after])
            return output + full

        handle = embeddings.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


class ParameterNoise(View):
    """The model at ``theta + e`` (``e ~ N(0, sigma^2)`` on trainable parameters, own generator).
    Not fusable: runs a second forward with the perturbed parameters swapped in (bypassing
    DDP), replaying the clean forward's dropout masks. Gradients reach ``theta`` through both
    views. Incompatible with gradient checkpointing (the recomputation would see ``theta``)."""

    name = "parameter_noise"
    fusable = False

    def __init__(self, sigma: float = 1e-3, seed: int = 0) -> None:
        if not (math.isfinite(sigma) and sigma >= 0):
            raise RegulariserError(f"ParameterNoise: sigma must be a finite number >= 0; got {sigma!r}")
        self.sigma, self.seed = float(sigma), int(seed)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "seed": self.seed}

    def perturbed_outputs(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int,
                          rng: RNGSnapshot | None) -> Any:
        inner = unwrap_model(model)
        if uses_gradient_checkpointing(inner):
            raise RegulariserError("ParameterNoise cannot be used with gradient checkpointing: the "
                                   "recomputed forward would use the unperturbed parameters")
        params = trainable_parameters(inner)
        gen = torch.Generator(device="cpu").manual_seed(step_seed(self.seed, step, 2))
        shifted = {}
        for name, p in params.items():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
            shifted[name] = p + self.sigma * noise
        with swapped_parameters(inner, shifted, RegulariserError), (rng.replay() if rng is not None else nullcontext()):
            return forward_outputs(inner, batch)


__all__ = ["Dropout", "EmbeddingNoise", "ParameterNoise", "View", "ViewRows"]
