"""Per-run tr(F) curves: mean trace per trainable block, smoothed, optionally 0-1 scaled.

The paper plots "tr(F) (moving average, normalized by the number of trainable adapters
at the given step)" (FUN paper, section 5.2): at each probe step the traces of the blocks
trainable at that step are summed and divided by how many there are, then a centred
moving average runs over the probe steps of each run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fisherlab.analysis.runset import RunSet
from fisherlab.spec.curve import curve_mask

__all__ = ["trace_curves", "trainable_mask", "centred_moving_average", "scale_01"]


def trainable_mask(runset: RunSet) -> np.ndarray:
    """Whether each row of ``runset.fisher`` was trainable at its step.

    The row's ``trainable`` flag when present. Otherwise, from the run's schedule: a
    block is trainable at step ``s`` once an ``unfreeze`` event at a step ``<= s`` lists it;
    a block the schedule never mentions (e.g. the head) counts as trainable throughout.
    A run with neither flags nor schedule counts every block as trainable (standard
    fine-tuning).
    """
    fisher = runset.fisher
    flags = fisher["trainable"].astype("boolean")
    mask = flags.fillna(False).to_numpy(dtype=bool)
    missing = flags.isna().to_numpy()
    if not missing.any():
        return mask
    schedule = runset.schedule
    unfreeze = schedule.loc[schedule["event"] == "unfreeze", ["run_id", "block", "step"]]
    first = unfreeze.groupby(["run_id", "block"], sort=False)["step"].min()
    rows = fisher.loc[missing, ["run_id", "block", "step"]]
    key = pd.MultiIndex.from_frame(rows[["run_id", "block"]])
    unfrozen_at = first.reindex(key).to_numpy(dtype=float)
    never_listed = np.isnan(unfrozen_at)
    mask[missing] = never_listed | (unfrozen_at <= rows["step"].to_numpy(dtype=float))
    return mask


def centred_moving_average(values: np.ndarray, groups: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``values`` within consecutive runs of equal ``groups``.

    The window covers ``window`` points: ``(window - 1) // 2`` before and ``window // 2``
    after each point; near the ends of a group it shrinks to the points available, and
    NaN values are skipped (mean over the finite points in the window).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    values = np.asarray(values, dtype=float)
    n = len(values)
    if window == 1 or n == 0:
        return values.copy()
    finite = np.isfinite(values)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(n)
    starts_mask = np.r_[True, groups[1:] != groups[:-1]]
    group_start = np.maximum.accumulate(np.where(starts_mask, idx, 0))
    ends_mask = np.r_[groups[1:] != groups[:-1], True]
    group_end = np.minimum.accumulate(np.where(ends_mask, idx, n - 1)[::-1])[::-1]
    lo = np.maximum(idx - (window - 1) // 2, group_start)
    hi = np.minimum(idx + window // 2, group_end) + 1
    count = ccount[hi] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[hi] - csum[lo]) / count, np.nan)


def scale_01(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Min-max scale ``values`` to [0, 1] within each group (a constant group gives 0)."""
    frame = pd.DataFrame({"g": groups, "v": values})
    grouped = frame.groupby("g", sort=False)["v"]
    lo, hi = grouped.transform("min").to_numpy(), grouped.transform("max").to_numpy()
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (values - lo) / np.where(span > 0, span, 1.0), 0.0 * values)


def trace_curves(runset: RunSet, window: int = 5, normalise: bool = True, scale01: bool = False,
                 layers_only: bool = True) -> pd.DataFrame:
    """One row per run and probe step: ``run_id, step, trace_sum, n_trainable, trace, trace_smooth``.

    ``trace_sum`` sums tr(F) over the blocks trainable at that step (:func:`trainable_mask`),
    ``n_trainable`` counts them and ``trace = trace_sum / n_trainable`` (``normalise=True``;
    otherwise ``trace = trace_sum``); steps with no trainable block get NaN. With
    ``layers_only`` (default, as the paper's "per adapter") blocks without a layer index,
    such as the head, are left out. ``trace_smooth`` is the centred moving average of
    ``trace`` over ``window`` probe points (:func:`centred_moving_average`); ``scale01``
    adds ``trace_scaled``, ``trace_smooth`` min-max scaled to [0, 1] per run.
    """
    fisher = runset.fisher
    columns = ["run_id", "step", "trace_sum", "n_trainable", "trace", "trace_smooth"]
    if scale01:
        columns.append("trace_scaled")
    if fisher.empty:
        return pd.DataFrame({c: pd.Series([], dtype=float if c not in ("run_id",) else object)
                             for c in columns})
    has_layer = fisher["layer"].notna().to_numpy()
    counted = curve_mask(trainable_mask(runset), has_layer, layers_only)
    frame = pd.DataFrame({
        "run_id": fisher["run_id"], "step": fisher["step"],
        "value": np.where(counted, fisher["trace"].to_numpy(), 0.0),
        "counted": counted.astype(np.int64),
    })
    if layers_only and not has_layer.any():
        raise ValueError("trace_curves: no block has a layer index; pass layers_only=False")
    grouped = frame.groupby(["run_id", "step"], sort=False, observed=True)
    out = grouped.agg(trace_sum=("value", "sum"), n_trainable=("counted", "sum")).reset_index()
    order = pd.DataFrame({"run_id": fisher["run_id"]}).drop_duplicates()["run_id"]
    rank = pd.Series(np.arange(len(order)), index=order.to_numpy())
    out = out.assign(_rank=out["run_id"].map(rank).to_numpy())
    out = out.sort_values(["_rank", "step"], kind="stable").drop(columns="_rank").reset_index(drop=True)
    n = out["n_trainable"].to_numpy()
    total = out["trace_sum"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        trace = np.where(n > 0, total / np.where(n > 0, n, 1), np.nan) if normalise else np.where(n > 0, total, np.nan)
    out["trace_sum"] = np.where(n > 0, total, np.nan)
    out["trace"] = trace
    groups = pd.factorize(out["run_id"])[0]
    out["trace_smooth"] = centred_moving_average(trace, groups, window)
    if scale01:
        out["trace_scaled"] = scale_01(out["trace_smooth"].to_numpy(), groups)
    return out[columns]
