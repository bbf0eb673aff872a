"""What every regulariser term shares: its error type and how it reads the model's outputs.

A *term* is a callable ``term(model, batch, outputs, *, step, rng, view_outputs, view_rows)
-> Tensor`` (a scalar to add to the task loss) with a ``name`` and a ``fusable`` flag
(whether its extra rows can ride along in the task forward; see :mod:`.loss`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fisherlab.errors import FisherlabError
from fisherlab.fisher.outputs import OutputKind, forward_by_name, get_output, infer_output
from fisherlab.torch_utils import batch_size_of, model_inputs, unwrap_model


class RegulariserError(FisherlabError, ValueError):
    """A regulariser cannot be built or applied as asked (the message says why)."""


def resolve_output(model: torch.nn.Module, output: str | OutputKind | None, outputs: Any = None,
                   batch: Mapping[str, Any] | None = None) -> OutputKind:
    """The output kind named ``output``, else the one inferred from the (unwrapped) model."""
    return get_output(output) if output is not None else infer_output(unwrap_model(model), outputs, batch)


def forward_outputs(model: torch.nn.Module, batch: Mapping[str, Any]) -> Any:
    """The model's outputs on ``batch`` (labels and raw text left out), found by name."""
    return forward_by_name(model, model_inputs(batch), RegulariserError)


def batch_size(batch: Mapping[str, Any]) -> int:
    """:func:`fisherlab.torch_utils.batch_size_of` raising :class:`RegulariserError`."""
    return batch_size_of(batch, RegulariserError)


__all__ = ["RegulariserError", "batch_size", "forward_outputs", "resolve_output"]
