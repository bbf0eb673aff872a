"""Scalar features of each run's tr(F) curve (definitions: ``docs/analysis.md``).

peak_value, peak_step, learning_period (width of the hill at half prominence, in steps),
area, early_mean and post_peak_decay, computed on one curve column (by default the
smoothed ``trace_smooth`` of :func:`fisherlab.analysis.trace_curves`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.signal import peak_prominences, peak_widths

__all__ = ["FEATURES", "curve_features", "features_wide", "hill_width", "run_features"]

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz

FEATURES = ("peak_value", "peak_step", "learning_period", "area", "early_mean", "post_peak_decay")


def _crossing(x: np.ndarray, steps: np.ndarray, start: int, stop: int, direction: int,
              height: float) -> float:
    """Step where the curve first falls to ``height`` walking from ``start`` by ``direction``.

    Linear interpolation between the two bracketing points (as scipy's ``peak_widths``);
    returns the step of ``stop`` when the curve never falls that low (truncated at the edge).
    """
    i = start
    while i != stop and x[i + direction] > height:
        i += direction
    if i == stop:
        return float(steps[stop])
    j = i + direction
    # x[i] > height >= x[j]
    frac = (x[i] - height) / (x[i] - x[j]) if x[i] != x[j] else 0.0
    return float(steps[i] + frac * (steps[j] - steps[i]))


def hill_width(values: np.ndarray, steps: np.ndarray, peak: int) -> tuple[float, float, float, float]:
    """Width (in steps) of the hill at ``peak`` at half its prominence, and its geometry.

    Returns ``(width, prominence, left_step, right_step)``. For an interior peak this is
    scipy.signal ``peak_prominences`` + ``peak_widths(rel_height=0.5)`` with the fractional
    sample positions mapped to steps by linear interpolation. scipy gives a peak on the
    first or last sample zero prominence; here its prominence is the drop to the lowest
    point on its only side, and the width is measured from the edge (a lower bound).
    A curve without a hill (prominence 0) has width NaN.
    """
    x = np.asarray(values, dtype=float)
    s = np.asarray(steps, dtype=float)
    n = len(x)
    if n < 2:
        return float("nan"), 0.0, float("nan"), float("nan")
    if 0 < peak < n - 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prominence, left_base, right_base = peak_prominences(x, [peak])
            if prominence[0] <= 0:
                return float("nan"), 0.0, float("nan"), float("nan")
            _, _, left_ips, right_ips = peak_widths(x, [peak], rel_height=0.5,
                                                    prominence_data=(prominence, left_base, right_base))
        grid = np.arange(n, dtype=float)
        left = float(np.interp(left_ips[0], grid, s))
        right = float(np.interp(right_ips[0], grid, s))
        return right - left, float(prominence[0]), left, right
    other = x[1:] if peak == 0 else x[:-1]
    prominence = float(x[peak] - other.min())
    if prominence <= 0:
        return float("nan"), 0.0, float("nan"), float("nan")
    height = x[peak] - prominence / 2.0
    if peak == 0:
        left, right = float(s[0]), _crossing(x, s, 0, n - 1, +1, height)
    else:
        left, right = _crossing(x, s, n - 1, 0, -1, height), float(s[-1])
    return right - left, prominence, left, right


def run_features(steps: np.ndarray, values: np.ndarray, early_fraction: float = 0.25) -> dict[str, float]:
    """The :data:`FEATURES` of one curve (NaN points are ignored)."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values) & np.isfinite(steps)
    steps, values = steps[ok], values[ok]
    out = dict.fromkeys(FEATURES, float("nan"))
    if not len(values):
        return out
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    peak = int(np.argmax(values))
    peak_value = float(values[peak])
    out["peak_value"] = peak_value
    out["peak_step"] = float(steps[peak])
    out["learning_period"] = hill_width(values, steps, peak)[0]
    out["area"] = float(_trapezoid(values, steps)) if len(values) > 1 else 0.0
    cutoff = steps[0] + early_fraction * (steps[-1] - steps[0])
    out["early_mean"] = float(values[steps <= cutoff].mean())
    if peak_value != 0:
        out["post_peak_decay"] = float((peak_value - values[-1]) / abs(peak_value))
    return out


def curve_features(curves: pd.DataFrame, value: str = "trace_smooth",
                   early_fraction: float = 0.25) -> pd.DataFrame:
    """Long frame ``run_id, feature, value`` with the :data:`FEATURES` of each run's curve.

    ``curves`` has ``run_id``, ``step`` and the ``value`` column (one row per run and
    step, e.g. from :func:`fisherlab.analysis.trace_curves`). Runs keep their order of
    first appearance; features are in :data:`FEATURES` order.
    """
    missing = [c for c in ("run_id", "step", value) if c not in curves.columns]
    if missing:
        raise ValueError(f"curve_features: curves lacks column(s) {missing}; it has {list(curves.columns)}")
    if not 0.0 <= early_fraction <= 1.0:
        raise ValueError(f"early_fraction must be in [0, 1], got {early_fraction}")
    run_ids, rows = [], []
    codes, uniques = pd.factorize(curves["run_id"])
    steps = curves["step"].to_numpy(dtype=float)
    values = curves[value].to_numpy(dtype=float)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    for k, run_id in enumerate(uniques):
        sel = order[bounds[k]:bounds[k + 1]]
        feats = run_features(steps[sel], values[sel], early_fraction)
        run_ids.extend([run_id] * len(FEATURES))
        rows.extend(feats[name] for name in FEATURES)
    return pd.DataFrame({"run_id": pd.array(run_ids, dtype="str") if run_ids else pd.array([], dtype="str"),
                         "feature": list(FEATURES) * len(uniques),
                         "value": np.asarray(rows, dtype=float)})


def features_wide(features: pd.DataFrame) -> pd.DataFrame:
    """The long feature frame as one row per run and one column per feature."""
    wide = features.pivot(index="run_id", columns="feature", values="value")
    ordered = [f for f in FEATURES if f in wide.columns] + [f for f in wide.columns if f not in FEATURES]
    wide = wide[ordered].reset_index()
    wide.columns.name = None
    return wide
