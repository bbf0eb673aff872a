"""Each run's final tr(F): the x axis of Stickland & Murray's Figures 1 and 2.

Adapter runs: tr(F) summed over the trainable layer blocks (head excluded) at the run's
last probe step -- the same blocks as the curves (:func:`fisherlab.spec.curve.curve_mask`).
Fully fine-tuned runs (``task_module == "full"``, the note's setting: mBERT fine-tuned
end to end): the whole model's tr(F), every measured block summed -- embeddings, every
layer and the head -- as the note's Figure 1 plots the trace of the FIM of all parameters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fisherlab.analysis.curves import trace_curves
from fisherlab.analysis.runset import RunSet

__all__ = ["WHOLE_MODEL_MODULES", "final_traces"]

WHOLE_MODEL_MODULES = ("full",)
"""``task_module`` values whose final tr(F) is the whole model's."""

_COLUMNS = ["run_id", "final_trace", "final_step", "trace_scope"]


def _last(curves: pd.DataFrame, scope: str) -> pd.DataFrame:
    ok = curves.loc[np.isfinite(pd.to_numeric(curves["trace_sum"], errors="coerce").to_numpy(dtype=float))]
    if ok.empty:
        return pd.DataFrame(columns=_COLUMNS)
    last = ok.sort_values(["run_id", "step"], kind="stable").groupby("run_id", sort=True).tail(1)
    out = last.rename(columns={"trace_sum": "final_trace", "step": "final_step"})
    return out.assign(trace_scope=scope)[_COLUMNS]


def final_traces(runset: RunSet, layer_curves: pd.DataFrame | None = None, window: int = 5) -> pd.DataFrame:
    """``run_id, final_trace, final_step, trace_scope`` (``trainable_layers`` or ``whole_model``).

    ``layer_curves``: :func:`trace_curves` of ``runset`` (computed when None).
    """
    runs = runset.runs
    whole_ids = set(runs.loc[runs["task_module"].astype(str).isin(WHOLE_MODEL_MODULES), "run_id"])
    if layer_curves is None:
        layer_curves = trace_curves(runset, window=window) if len(runset.fisher) else pd.DataFrame(
            columns=["run_id", "step", "trace_sum"])
    parts = [_last(layer_curves.loc[~layer_curves["run_id"].isin(whole_ids)], "trainable_layers")]
    if whole_ids and len(runset.fisher):
        whole = trace_curves(runset, window=window, normalise=False, layers_only=False)
        parts.append(_last(whole.loc[whole["run_id"].isin(whole_ids)], "whole_model"))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=_COLUMNS)
