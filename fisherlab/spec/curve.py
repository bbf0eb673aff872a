"""Which blocks a tr(F) curve point averages over: one definition for the logs and the report.

The FUN paper plots tr(F) "normalized by the number of trainable adapters at the given
step" (section 5.2): the mean over the *layer* blocks trainable at that step; the head
(and any block without a layer index) is left out by default. The Trainer logs
(``fisher/mean_trainable``, :mod:`fisherlab.hf.probe_callback`) and the report's curves
(:func:`fisherlab.analysis.curves.trace_curves`) both use :func:`curve_mask`, so the
logged value equals the report's unsmoothed curve point. Torch-free (numpy only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["curve_mask", "curve_mean"]


def curve_mask(trainable: Sequence[bool] | np.ndarray, has_layer: Sequence[bool] | np.ndarray,
               layers_only: bool = True) -> np.ndarray:
    """Boolean mask, shape ``(n_blocks,)``: the blocks that count in a curve point.

    A block counts when it is trainable at the step and, with ``layers_only`` (default),
    has a layer index (so the head and shared/embedding blocks are excluded).
    """
    trainable = np.asarray(trainable, dtype=bool)
    has_layer = np.asarray(has_layer, dtype=bool)
    if trainable.shape != has_layer.shape:
        raise ValueError(f"curve_mask: trainable {trainable.shape} and has_layer {has_layer.shape} differ in shape")
    return trainable & has_layer if layers_only else trainable.copy()


def curve_mean(traces: Sequence[float] | np.ndarray, trainable: Sequence[bool] | np.ndarray,
               has_layer: Sequence[bool] | np.ndarray, layers_only: bool = True) -> float:
    """Mean of ``traces`` (shape ``(n_blocks,)``) over :func:`curve_mask`; NaN when no block counts."""
    values = np.asarray(traces, dtype=float)
    mask = curve_mask(trainable, has_layer, layers_only)
    if values.shape != mask.shape:
        raise ValueError(f"curve_mean: traces {values.shape} and the mask {mask.shape} differ in shape")
    return float(values[mask].mean()) if mask.any() else float("nan")
