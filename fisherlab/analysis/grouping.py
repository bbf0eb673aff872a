"""The FUN paper's rule for aggregating runs with similar results (footnote 10).

"(i) sorting the cross-lingual transfer results, then (ii) taking the largest
'ungrouped' value, (iii) finding runs that are within 1 point of performance delta,
and then (iv) grouping them" -- repeated until every run belongs to a group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["group_runs"]

_TOLERANCE = 1e-9


def _group_cell(values: np.ndarray, run_ids: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    order = sorted(range(len(values)), key=lambda i: (-values[i], run_ids[i]))
    group = np.full(len(values), -1, dtype=np.int64)
    leader = np.empty(len(values), dtype=object)
    next_group = 0
    for i in order:
        if group[i] >= 0:
            continue
        # i is the best ungrouped run (ties: smallest run_id): it leads a new group.
        for j in order:
            if group[j] < 0 and values[i] - values[j] <= delta + _TOLERANCE * max(1.0, abs(values[i])):
                group[j] = next_group
                leader[j] = run_ids[i]
        next_group += 1
    return group, leader


def group_runs(values: pd.DataFrame, delta: float = 1.0, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Group runs whose results lie within ``delta`` (inclusive) of the best ungrouped run.

    ``values`` has ``run_id`` and ``value`` (e.g. ``xling_avg``); other columns are kept.
    Runs are taken best first (ties broken by ``run_id``): the best ungrouped run leads a
    new group, which takes every ungrouped run with ``leader_value - value <= delta``
    (compared with a relative tolerance of 1e-9 so that 64.01 vs 63.01 counts as exactly
    one point). Groups are numbered 0, 1, ... from the best; ``leader`` is the leading
    run's id. With ``by`` (columns of ``values``), each cell is grouped separately.
    Raises ValueError on missing values or duplicated run ids.
    """
    missing = [c for c in ("run_id", "value", *(by or ())) if c not in values.columns]
    if missing:
        raise ValueError(f"group_runs: values lacks column(s) {missing}; it has {list(values.columns)}")
    if delta < 0 or not np.isfinite(delta):
        raise ValueError(f"group_runs: delta must be a finite number >= 0, got {delta}")
    if values["run_id"].duplicated().any():
        dup = values.loc[values["run_id"].duplicated(), "run_id"].tolist()
        raise ValueError(f"group_runs: duplicated run_id(s) {dup[:5]}")
    numbers = pd.to_numeric(values["value"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(numbers).all():
        bad = values.loc[~np.isfinite(numbers), "run_id"].tolist()
        raise ValueError(f"group_runs: runs without a finite value: {bad[:5]} (drop them first)")
    out = values.copy().reset_index(drop=True)
    out["group"] = np.zeros(len(out), dtype=np.int64)
    out["leader"] = pd.Series([None] * len(out), dtype=object)
    cells = [np.arange(len(out))] if not by else [
        idx for _, idx in sorted(out.groupby(list(by), dropna=False, sort=True).indices.items(),
                                 key=lambda kv: str(kv[0]))]
    run_ids = out["run_id"].astype(str).to_numpy()
    for idx in cells:
        group, leader = _group_cell(numbers[idx], run_ids[idx], float(delta))
        out.loc[idx, "group"] = group
        out.loc[idx, "leader"] = leader
    out["leader"] = out["leader"].astype("str")
    sort_cols = [*(by or ()), "group"]
    out["_value"] = -numbers
    out = out.sort_values([*sort_cols, "_value", "run_id"], kind="stable").drop(columns="_value")
    return out.reset_index(drop=True)
