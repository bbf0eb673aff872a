"""Realised unfreezing orders per run (FUN Figure 5) and their agreement with top-down.

The permutation-schedule sampler the sweep uses lives with the strategies in the torch-free
:mod:`fisherlab.spec.schedules`; it is re-exported here for the analysis side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from fisherlab.analysis.runset import RunSet
from fisherlab.spec.schedules import count_permutation_schedules, sample_permutation_schedules

__all__ = ["sample_permutation_schedules", "count_permutation_schedules", "unfreezing_orders",
           "mean_unfreeze_position", "order_agreement"]


def unfreezing_orders(runset: RunSet) -> pd.DataFrame:
    """Realised order per run: ``run_id, method, position, layer, step`` (+ ``model, task``).

    One row per layer block unfrozen, from the ``unfreeze`` events of the schedule;
    ``position`` is the 0-based rank of the event that unfroze the layer (layers unfrozen
    together share a position). Runs without a schedule are absent.
    """
    sched = runset.schedule
    rows = sched.loc[(sched["event"] == "unfreeze") & sched["position"].notna() & sched["layer"].notna(),
                     ["run_id", "position", "layer", "step"]]
    meta = runset.runs[["run_id", "method", "model", "task"]]
    out = rows.merge(meta, on="run_id", how="left", sort=False)
    out = out[["run_id", "method", "position", "layer", "step", "model", "task"]]
    out["position"] = out["position"].astype(np.int64)
    out["layer"] = out["layer"].astype(np.int64)
    return out.sort_values(["run_id", "position", "layer"], kind="stable").reset_index(drop=True)


def mean_unfreeze_position(orders: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Mean (and std, n runs) unfreezing position of each layer per ``by`` cell (FUN Figure 5)."""
    keys = [*by, "layer"]
    grouped = orders.groupby(keys, sort=True, dropna=False)["position"]
    out = grouped.agg(mean_position="mean", std="std", n="count").reset_index()
    return out


def order_agreement(orders: pd.DataFrame) -> pd.DataFrame:
    """Kendall tau-b of each run's order against top-down (1 = top-down, -1 = bottom-up).

    Compares each unfrozen layer's position with its rank in the top-down order (higher
    layers first) over the layers the run unfroze; NaN with fewer than two layers or when
    all were unfrozen at once.
    """
    rows = []
    for (run_id, method), part in orders.groupby(["run_id", "method"], sort=True, dropna=False):
        positions = part["position"].to_numpy(dtype=float)
        top_down_rank = -part["layer"].to_numpy(dtype=float)
        tau = float("nan")
        if len(part) >= 2 and np.ptp(positions) > 0:
            tau = float(kendalltau(positions, top_down_rank, variant="b").statistic)
        rows.append({"run_id": run_id, "method": method, "kendall_tau": tau, "n_layers": len(part)})
    return pd.DataFrame(rows, columns=["run_id", "method", "kendall_tau", "n_layers"])
