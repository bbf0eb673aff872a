"""Relative performance of methods against a baseline, as grouped bars (FUN Fig. 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fisherlab.plots import _bands as bands
from fisherlab.plots import _facets as facets
from fisherlab.plots.style import mpl_text, paper_style, resolve_palette

#: Default y labels of the columns ``result_table``/``compare_methods`` write.
VALUE_LABELS = {
    "rel_to_baseline": "difference to the baseline",
    "rel_to_baseline_pct": "difference to the baseline",
    "diff": "difference to the baseline",
    "mean": "mean result",
}


def plot_relative_performance(
    table: pd.DataFrame,
    *,
    value: str = "rel_to_baseline",
    x: str | None = "task",
    hue: str = "method",
    panel: str | Sequence[str] | None = ("model",),
    error: str | tuple[str, str] | None = None,
    n: str | None = None,
    min_error_n: int = bands.MIN_BAND_N,
    reference: float | None = 0.0,
    reference_label: str | None = None,
    ylabel: str | None = None,
    unit: str | None = None,
    palette: Mapping[str, Any] | None = None,
    col_wrap: int = 3,
    ax: Axes | None = None,
) -> Figure:
    """Bars of ``value`` per ``x`` (task) and ``hue`` (method), one panel per model.

    ``table`` is e.g. ``result_table`` output (``rel_to_baseline`` = method
    minus baseline) or ``compare_methods`` output (``value="mean"``,
    ``error=("ci_low", "ci_high")``). ``error`` is a column of symmetric
    half-widths (e.g. ``"xling_std"``) or a pair of lower/upper bound columns.
    A horizontal line marks ``reference`` (the baseline level; with
    ``reference_label`` it gets a legend entry, e.g. the baseline and its n); rows
    with a non-finite value are not drawn.

    ``n`` names the column with the number of runs behind each bar: the legend gives
    it per ``hue`` and error bars are drawn only for bars with at least
    ``min_error_n`` runs (the legend says so). ``unit`` is appended to the y label
    (e.g. ``"accuracy points"``); ``ylabel`` defaults to a description of ``value``.
    """
    what = "plot_relative_performance"
    x_col = x if x is not None and x in table.columns else None
    err_cols = [] if error is None else ([error] if isinstance(error, str) else list(error))
    facets.require_columns(table, [value, hue, *err_cols, *([n] if n else [])], what)
    panel_cols = [c for c in facets.as_list(panel) if c in table.columns and c != x_col]
    data = facets.finite_rows(table, [value])
    for c in err_cols:
        data[c] = pd.to_numeric(data[c], errors="coerce").astype(float)
    data = facets.label_columns(data, [hue, *panel_cols, *([x_col] if x_col else [])])
    keys = facets.panel_keys(data, panel_cols) if len(data) else []
    hues = sorted(data[hue].unique())
    colors = resolve_palette(hues, palette)
    label = ylabel if ylabel is not None else VALUE_LABELS.get(value, value)
    if unit is None and value.endswith("_pct"):
        unit = "% of the baseline"
    if unit:
        label = f"{label}\n({unit})"
    suppressed = False

    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap, panel_size=(3.6, 2.8), what=what)
        for axis, key, title in panels:
            part = facets.select_panel(data, panel_cols, key)
            xs = sorted(set(part[x_col]), key=lambda v: facets.natural_key([v])) if x_col else [""]
            present = [h for h in hues if h in set(part[hue])]
            width = 0.8 / max(1, len(present))
            for j, h in enumerate(present):
                rows = part.loc[part[hue] == h]
                for i, xv in enumerate(xs):
                    cell = rows if x_col is None else rows.loc[rows[x_col] == xv]
                    if not len(cell):
                        continue
                    if len(cell) > 1:
                        raise ValueError(
                            f"{what}: {len(cell)} rows for {hue}={h!r}"
                            + (f", {x_col}={xv!r}" if x_col else "")
                            + f" in panel {key}; aggregate first (one row per bar)"
                        )
                    row = cell.iloc[0]
                    pos = i - 0.4 + width * (j + 0.5)
                    yerr = _yerr(row, value, err_cols)
                    if yerr is not None and n is not None and not _enough_runs(row[n], min_error_n):
                        yerr, suppressed = None, True
                    axis.bar(pos, row[value], width=width * 0.95, color=colors[h],
                             yerr=yerr, capsize=2, error_kw={"lw": 0.8})
            axis.set_xticks(range(len(xs)))
            axis.set_xticklabels([mpl_text(v) for v in xs], rotation=30 if len(xs) > 3 else 0)
            if reference is not None:
                axis.axhline(reference, color="0.3", lw=0.8)
            axis.set_ylabel(mpl_text(label))
            axis.set_title(title)
        handles: list = [Patch(color=colors[h]) for h in hues]
        if n is None:
            labels = [mpl_text(h) for h in hues]
        else:
            labels = [mpl_text(f"{h} ({bands.n_text(data.loc[data[hue] == h, n])})") for h in hues]
        if reference is not None and reference_label:
            handles.append(Line2D([], [], color="0.3", lw=0.8))
            labels.append(mpl_text(reference_label))
        legend_title = mpl_text(hue) + (" (n = runs)" if n is not None else "")
        if suppressed:
            legend_title += f"\nno error bar\nwhere n < {min_error_n}"
        facets.add_legend(fig, ax, handles, labels, legend_title)
        facets.finish(fig, common, ax is None)
    return fig


def _enough_runs(count: Any, min_n: int) -> bool:
    try:
        return float(count) >= min_n
    except (TypeError, ValueError):
        return False


def _yerr(row: pd.Series, value: str, err_cols: list[str]) -> Any:
    if not err_cols:
        return None
    if len(err_cols) == 1:
        half = float(row[err_cols[0]])
        return None if not np.isfinite(half) else half
    low, high = float(row[err_cols[0]]), float(row[err_cols[1]])
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    v = float(row[value])
    return np.array([[max(0.0, v - low)], [max(0.0, high - v)]])
