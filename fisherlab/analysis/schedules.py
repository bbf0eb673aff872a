"""Unfreezing schedules: the paper's permutation sampler and realised orders per run.

``sample_permutation_schedules`` reproduces the FUN paper's random schedules (section
5.2, footnote 9): the top layer is always unfrozen first, the next one comes from
``{L-2, L-3}`` and the remaining layers follow in a uniformly random order; duplicates
and the plain top-down order (kept as the extra, 10th schedule in the paper) are rejected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from fisherlab.analysis.loading import RunSet

__all__ = ["sample_permutation_schedules", "count_permutation_schedules", "unfreezing_orders",
           "mean_unfreeze_position", "order_agreement"]

_ENUMERATE_LIMIT = 200_000


def _check(n_layers: int, first: int | None, second_from: Iterable[int] | None) -> tuple[int, list[int]]:
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    top = n_layers - 1
    first = top if first is None else int(first)
    if not 0 <= first < n_layers:
        raise ValueError(f"first={first} is not a layer index in [0, {n_layers - 1}]")
    if second_from is None:
        second = [layer for layer in (n_layers - 2, n_layers - 3) if layer >= 0 and layer != first]
    else:
        second = sorted({int(layer) for layer in second_from})
        bad = [layer for layer in second if not 0 <= layer < n_layers or layer == first]
        if bad:
            raise ValueError(f"second_from has {bad}: must be layer indices in [0, {n_layers - 1}] "
                             f"other than first={first}")
    if n_layers > 1 and not second:
        raise ValueError("second_from is empty: no layer may follow the first one")
    return first, second


def count_permutation_schedules(n_layers: int, first: int | None = None,
                                second_from: Iterable[int] | None = None) -> int:
    """How many distinct schedules :func:`sample_permutation_schedules` can return."""
    first, second = _check(n_layers, first, second_from)
    if n_layers == 1:
        total = 1
    else:
        total = len(second) * math.factorial(n_layers - 2)
    top_down_allowed = first == n_layers - 1 and (n_layers == 1 or n_layers - 2 in second)
    return total - (1 if top_down_allowed else 0)


def sample_permutation_schedules(n_layers: int, n: int, seed: int, first: int | None = None,
                                 second_from: Iterable[int] | None = None) -> list[list[int]]:
    """``n`` distinct random unfreezing orders of ``n_layers`` layers (lists of layer indices).

    Each order starts with ``first`` (default: the top layer ``n_layers - 1``), then a layer
    drawn uniformly from ``second_from`` (default ``{L-2, L-3}``), then the remaining layers
    in a uniformly random order -- the distribution of the paper's rejection sampler
    (uniform permutations accepted when they start as required). The top-down order and
    duplicates are rejected. Deterministic for a given ``seed``. Raises ValueError when
    ``n`` exceeds :func:`count_permutation_schedules`.
    """
    first, second = _check(n_layers, first, second_from)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    available = count_permutation_schedules(n_layers, first, second)
    if n > available:
        raise ValueError(
            f"cannot sample {n} distinct schedules: only {available} exist for n_layers={n_layers}, "
            f"first={first}, second from {second} (top-down order excluded)")
    rng = np.random.default_rng(seed)
    top_down = tuple(range(n_layers - 1, -1, -1))
    if available <= _ENUMERATE_LIMIT and n > available // 2:
        # Near-exhaustive requests: enumerate and draw without replacement (no endless rejection).
        from itertools import permutations

        pool = [(first, s, *rest) for s in second
                for rest in permutations([x for x in range(n_layers) if x not in (first, s)])]
        pool = [order for order in pool if order != top_down] if n_layers > 1 else [(first,)]
        picks = rng.choice(len(pool), size=n, replace=False)
        return [list(map(int, pool[i])) for i in picks]
    chosen: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    while len(chosen) < n:
        s = int(second[rng.integers(len(second))])
        rest = [x for x in range(n_layers) if x not in (first, s)]
        order = (first, s, *(int(x) for x in rng.permutation(rest)))
        if order == top_down or order in seen:
            continue
        seen.add(order)
        chosen.append(list(order))
    return chosen


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
