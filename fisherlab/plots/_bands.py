"""Spread over runs: when a band or error bar is drawn, and how the legend says so.

A ±1 sd band from two seeds is one difference drawn as if it were a spread; a
reviewer reads it as a measured variability. The rule every figure follows: a
band (or error bar) over runs is drawn only where at least ``min_n`` runs
(:data:`MIN_BAND_N` by default) stand behind a line or bar; with fewer, the
single runs are drawn as thin lines (curves) or the bar has no error bar, and the
legend says which.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

#: Fewest runs behind a band or error bar (sd/CI from two runs is not drawn).
MIN_BAND_N = 3

BAND_LABELS = {"sd": "±1 sd", "se": "±1 se", "ci": "95% bootstrap CI", "pi": "95% interval"}


def band_label(errorbar: Any) -> str:
    """Words for a seaborn ``errorbar`` spec (``"sd"`` -> ``±1 sd``)."""
    if errorbar is None:
        return "no band"
    name = errorbar[0] if isinstance(errorbar, tuple) else errorbar
    return BAND_LABELS.get(str(name), str(errorbar))


def mean_line(axis: Axes, part: pd.DataFrame, x: str, y: str, *, color: Any, errorbar: Any,
              min_n: int, n_boot: int, seed: int, linestyle: str = "-") -> str:
    """Mean of ``y`` over the runs (``run_id``) of ``part`` at each ``x``, with its spread.

    ``min_n`` runs or more: a seaborn band ``errorbar``. Two to ``min_n - 1`` runs:
    each run as a thin line under the mean, no band. One run: its line. Returns what
    was drawn: ``"band"``, ``"runs"`` or ``"single"`` (for the legend).
    """
    n = int(part["run_id"].nunique())
    if errorbar is not None and n >= min_n:
        sns.lineplot(data=part, x=x, y=y, color=color, errorbar=errorbar, n_boot=n_boot, seed=seed,
                     estimator="mean", linestyle=linestyle, legend=False, ax=axis)
        return "band"
    if errorbar is not None and n > 1:
        for _, run in part.groupby("run_id", sort=True):
            axis.plot(run[x].to_numpy(), run[y].to_numpy(), color=color, lw=0.7, alpha=0.4,
                      linestyle=linestyle)
    sns.lineplot(data=part, x=x, y=y, color=color, errorbar=None, estimator="mean",
                 linestyle=linestyle, legend=False, ax=axis)
    return "runs" if errorbar is not None and n > 1 else "single"


def spread_note(drawn: Iterable[str], errorbar: Any, min_n: int) -> str:
    """Legend line(s) for what :func:`mean_line` drew across a figure."""
    kinds = set(drawn)
    if errorbar is None:
        return "no band"
    lines = []
    if "band" in kinds:
        lines.append(f"band: {band_label(errorbar)} over runs\n(where n ≥ {min_n})")
    if "runs" in kinds:
        lines.append(f"thin lines: single runs\n(n < {min_n}, no band)")
    if not lines:
        lines.append("one run per line\n(no band)")
    return "\n".join(lines)


def n_text(values: Iterable[Any]) -> str:
    """``n=2`` or ``n=2–3`` for the run counts of one legend entry (``n=?`` when unknown)."""
    numbers = sorted({int(v) for v in values if pd.notna(v)})
    if not numbers:
        return "n=?"
    return f"n={numbers[0]}" if len(numbers) == 1 else f"n={numbers[0]}–{numbers[-1]}"
