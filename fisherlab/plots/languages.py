"""Per-run language-ranking figure for target-language tr(F) (never imports torch).

:func:`plot_language_ranking` draws, for every run, the correlation between the ranking
of its target languages by a tr(F) feature and their ranking by zero-shot result
(:func:`fisherlab.analysis.languages.language_ranking`), one point per run (coloured by
method), with the mean over runs and its bootstrap CI
(:func:`fisherlab.analysis.languages.ranking_summary`) as a line and band. The
per-language curves and the across-run relation reuse :func:`plot_trace_curves` and
:func:`plot_feature_vs_result` with ``panel="language"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fisherlab.plots import _facets as facets
from fisherlab.plots.correlation import format_p
from fisherlab.plots.style import paper_style, resolve_palette


def plot_language_ranking(per_run: pd.DataFrame, summary: pd.DataFrame | None = None, *,
                          hue: str | None = "method", palette: Mapping[str, Any] | None = None,
                          hue_title: str | None = None, ax: Axes | None = None) -> Figure:
    """One row per run (sorted by ``r``): its within-run ranking correlation ``r`` (x) as a
    point coloured by ``hue``; the ``summary`` row of the same ``method`` (``mean_r``,
    ``ci_low``, ``ci_high``, ``p_value``, ``n_runs``) as a vertical line and band; a dotted
    line at 0 (no agreement). ``per_run``: ``run_id, method, r`` (+ ``hue`` column, its legend
    titled ``hue_title``)."""
    facets.require_columns(per_run, ["run_id", "r"], "plot_language_ranking")
    data = per_run.loc[np.isfinite(per_run["r"].to_numpy(dtype=float))].sort_values("r", kind="stable")
    if data.empty:
        raise ValueError("plot_language_ranking: no run has a finite ranking correlation (needs >= 3 languages)")
    hues = sorted(data[hue].astype(str).unique()) if hue and hue in data.columns else []
    colors = resolve_palette(hues, palette) if hues else {}
    with paper_style():
        fig, axes = facets.facet_axes(1, ax=ax, panel_size=(4.2, max(2.2, 0.22 * len(data) + 1.0)),
                                      what="plot_language_ranking")
        axis = axes[0]
        y = np.arange(len(data))
        for i, (_, row) in enumerate(data.iterrows()):
            color = colors.get(str(row[hue]), "C0") if hues else "C0"
            axis.plot([row["r"]], [y[i]], "o", color=color, markersize=4)
        axis.set_yticks(y, [str(r) for r in data["run_id"]], fontsize="x-small")
        axis.axvline(0.0, color="0.5", linestyle=":", linewidth=1)
        method = str(data["method"].iloc[0]) if "method" in data.columns else "spearman"
        title = f"{method.capitalize()} r per run"
        if summary is not None and len(summary):
            match = summary.loc[summary["method"] == method] if "method" in summary.columns else summary
            if len(match):
                s = match.iloc[0]
                axis.axvline(float(s["mean_r"]), color="black", linewidth=1.2)
                if np.isfinite(s["ci_low"]) and np.isfinite(s["ci_high"]):
                    axis.axvspan(float(s["ci_low"]), float(s["ci_high"]), color="0.85", zorder=0)
                    title += f"\nmean {s['mean_r']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"
                else:
                    title += f"\nmean {s['mean_r']:.2f}"
                if np.isfinite(s["p_value"]):
                    title += f", {format_p(float(s['p_value']))}"
                title += f", n = {int(s['n_runs'])} runs"
        axis.set_xlim(-1.05, 1.05)
        axis.set_xlabel("ranking of languages: tr(F) feature vs result")
        axis.set_title(title, fontsize="small")
        if hues:
            handles = [axis.plot([], [], "o", color=colors[h])[0] for h in hues]
            facets.add_legend(fig, ax, handles, hues, hue_title or hue)
    return fig


__all__ = ["plot_language_ranking"]
