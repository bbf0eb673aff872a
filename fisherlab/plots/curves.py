"""tr(F) curves: per method with seed bands (FUN Fig. 3) and against validation (Fig. 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fisherlab.plots import _bands as bands
from fisherlab.plots import _facets as facets
from fisherlab.plots.style import (
    TRACE_COLOR,
    VALIDATION_COLOR,
    mpl_text,
    paper_style,
    resolve_palette,
)

#: Axis labels for the curve columns of ``trace_curves``.
CURVE_LABELS = {
    "trace": "tr(F) per trainable block",
    "trace_smooth": "tr(F) per trainable block\n(moving average)",
    "trace_scaled": "tr(F), scaled to [0, 1]",
    "trace_sum": "tr(F), sum over trainable layer blocks",
}

def _attach(curves: pd.DataFrame, runs: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    """Curves with the run-level ``columns`` (method, model, ...) joined on run_id."""
    wanted = [c for c in dict.fromkeys(columns) if c not in curves.columns]
    if not wanted:
        return curves
    if runs is None:
        raise ValueError(f"trace curves lack column(s) {wanted}; pass the runs frame")
    present = [c for c in wanted if c in runs.columns]
    facets.require_columns(runs, ["run_id"], "runs frame")
    return curves.merge(runs[["run_id", *present]].drop_duplicates("run_id"), on="run_id", how="left")


def plot_trace_curves(
    curves: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    value: str = "trace_smooth",
    hue: str = "method",
    panel: str | Sequence[str] | None = ("model", "task", "estimator"),
    estimator_policy: str = "facet",
    errorbar: Any = "sd",
    min_band_n: int = bands.MIN_BAND_N,
    n_boot: int = 1000,
    seed: int = 0,
    palette: Mapping[str, Any] | None = None,
    logy: bool = False,
    col_wrap: int = 3,
    ax: Axes | None = None,
) -> Figure:
    """tr(F) over training steps, one line per ``hue`` (method), band over seeds.

    ``curves`` is the output of ``fisherlab.analysis.trace_curves``; ``runs``
    supplies the method and panel columns. One panel per combination of the
    ``panel`` columns present in the data; runs measured with different
    estimators get separate panels (or a :class:`MixedEstimatorError` with
    ``estimator_policy="refuse"``). The band is ``errorbar`` over runs (seeds)
    at each step (seaborn semantics; "sd" by default), drawn only for a line with
    at least ``min_band_n`` runs; with fewer, its runs are drawn as thin lines. The
    legend gives each method's number of runs and says which was drawn.
    """
    what = "plot_trace_curves"
    panel_cols = facets.as_list(panel)
    data = _attach(curves, runs, [hue, *panel_cols, "estimator"])
    facets.require_columns(data, ["run_id", "step", value, hue], what)
    panel_cols = [c for c in panel_cols if c in data.columns]
    panel_cols = facets.estimator_panels(data, panel_cols, estimator_policy, what)
    data = facets.finite_rows(data, ["step", value])
    if logy:
        data = data.loc[data[value] > 0]
    data = facets.label_columns(data, [hue, *panel_cols])
    keys = facets.panel_keys(data, panel_cols) if len(data) else []
    hues = sorted(data[hue].unique())
    colors = resolve_palette(hues, palette)
    n_runs = data.groupby(hue)["run_id"].nunique()

    drawn: list[str] = []
    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap, what=what)
        for axis, key, title in panels:
            part = facets.select_panel(data, panel_cols, key).sort_values([hue, "run_id", "step"])
            for h in hues:
                rows = part.loc[part[hue] == h]
                if len(rows):
                    drawn.append(bands.mean_line(axis, rows, "step", value, color=colors[h],
                                                 errorbar=errorbar, min_n=min_band_n,
                                                 n_boot=n_boot, seed=seed))
            axis.set_title(title)
            axis.set_xlabel("training step")
            axis.set_ylabel(CURVE_LABELS.get(value, mpl_text(value)))
            if logy:
                axis.set_yscale("log")
        handles = [Line2D([], [], color=colors[h], lw=2) for h in hues]
        labels = [mpl_text(f"{h} (n={int(n_runs.get(h, 0))})") for h in hues]
        legend_title = f"{mpl_text(hue)} (n = runs)\n{bands.spread_note(drawn, errorbar, min_band_n)}"
        facets.add_legend(fig, ax, handles, labels, legend_title)
        facets.finish(fig, common, ax is None)
    return fig


def languages_text(languages: Sequence[str]) -> str:
    """``en`` or ``mean of de, en``: which languages a validation line is over."""
    langs = sorted({str(v) for v in languages})
    if not langs:
        return "language not recorded"
    return langs[0] if len(langs) == 1 else "mean of " + ", ".join(langs)


def _validation_frame(
    metrics: pd.DataFrame, split: str, metric: str | None, language: str | None, what: str
) -> tuple[pd.DataFrame, str, list[str]]:
    """``run_id, step, validation`` (mean over the languages present), the metric, the languages."""
    facets.require_columns(metrics, ["run_id", "step", "split", "metric", "value"], what)
    part = metrics.loc[metrics["split"].astype(str) == split]
    if metric is None:
        found = sorted({str(m) for m in part["metric"]})
        if len(found) > 1:
            raise ValueError(
                f"{what}: split {split!r} has several metrics {found}; choose one with metric=..."
            )
        metric = found[0] if found else "metric"
    part = part.loc[part["metric"].astype(str) == metric]
    if language is not None and "language" in part.columns:
        part = part.loc[part["language"].astype(str) == language]
    part = facets.finite_rows(part, ["step", "value"])
    languages = sorted({str(v) for v in part["language"].dropna()}) if "language" in part.columns else []
    # Several languages at one step: their mean is the run's validation value.
    part = part.groupby(["run_id", "step"], as_index=False)["value"].mean()
    return part.rename(columns={"value": "validation"}), metric, languages


def group_title(members: pd.DataFrame, group: str, result_label: str, hue: str = "method") -> str:
    """Which runs a panel of :func:`plot_trace_validation` holds, in words.

    ``group 0: 2 runs, avg. result 62.2–62.7`` and, when ``members`` has a ``hue``
    column, the runs' methods with counts (``fisher ×2, standard``)."""
    n = int(members["run_id"].nunique())
    values = pd.to_numeric(members["value"], errors="coerce").to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        result = "n/a"
    elif np.isclose(values.min(), values.max()):
        result = f"{values.min():.2f}"
    else:
        result = f"{values.min():.2f}–{values.max():.2f}"
    line = f"group {group}: {n} run{'s' if n != 1 else ''}, {result_label} {result}"
    if hue in members.columns:
        counts = members[hue].astype(str).value_counts()
        names = sorted(counts.index, key=lambda v: (-counts[v], v))
        line += "\n" + ", ".join(name if counts[name] == 1 else f"{name} ×{counts[name]}" for name in names)
    return mpl_text(line)


def _same_ylim(axes: list[Axes]) -> None:
    """Put every axis in ``axes`` on one y range (the union of their ranges)."""
    if len(axes) < 2:
        return
    lows, highs = zip(*(a.get_ylim() for a in axes), strict=True)
    low, high = min(lows), max(highs)
    for a in axes:
        a.set_ylim(low, high)


def plot_trace_validation(
    curves: pd.DataFrame,
    metrics: pd.DataFrame,
    groups: pd.DataFrame,
    *,
    value: str = "trace_scaled",
    metric: str | None = None,
    split: str = "validation",
    language: str | None = None,
    panel: str | Sequence[str] | None = ("model", "task", "estimator", "group"),
    estimator_policy: str = "facet",
    errorbar: Any = "sd",
    min_band_n: int = bands.MIN_BAND_N,
    n_boot: int = 1000,
    seed: int = 0,
    result_label: str = "avg. result",
    col_wrap: int = 3,
    ax: Axes | None = None,
) -> Figure:
    """Normalised tr(F) (left axis) and the validation metric (right axis), one panel per group.

    ``groups`` is ``group_runs`` output (``run_id, value, group, leader``),
    optionally with model/task/estimator columns and a ``method`` column; each
    panel's title says which runs the group holds (their number, the range of
    their result ``value`` and, with ``method``, their methods). Lines are means
    over the group's runs; bands ``errorbar`` over those runs where the group has
    at least ``min_band_n`` runs (thin single-run lines otherwise). Validation rows
    are ``metrics`` rows of ``split`` and ``metric``, averaged over the languages
    present (only ``language`` if given); the right axis names those languages.
    Every panel's left axis has the same range, and so has every right axis.
    """
    what = "plot_trace_validation"
    facets.require_columns(groups, ["run_id", "group", "value"], what + " groups")
    facets.require_columns(curves, ["run_id", "step", value], what + " curves")
    panel_cols = [c for c in facets.as_list(panel) if c in groups.columns]
    if "group" not in panel_cols:
        panel_cols.append("group")
    panel_cols = facets.estimator_panels(groups, panel_cols, estimator_policy, what)
    grp = facets.label_columns(groups, panel_cols)
    grp_cols = ["run_id", *[c for c in panel_cols if c != "run_id"]]
    trace = facets.finite_rows(curves[["run_id", "step", value]], ["step", value]).merge(
        grp[grp_cols], on="run_id", how="inner"
    )
    valid, metric, languages = _validation_frame(metrics, split, metric, language, what)
    valid = valid.merge(grp[grp_cols], on="run_id", how="inner")
    keys = facets.panel_keys(grp, panel_cols)
    right_label = f"{split} {metric}\n({languages_text(languages)})"

    drawn: list[str] = []
    lefts: list[Axes] = []
    rights: list[Axes] = []
    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap,
                                                panel_size=(3.6, 2.9), what=what)
        for axis, key, title in panels:
            members = facets.select_panel(grp, panel_cols, key)
            part = facets.select_panel(trace, panel_cols, key).sort_values(["run_id", "step"])
            if len(part):
                drawn.append(bands.mean_line(axis, part, "step", value, color=TRACE_COLOR,
                                             errorbar=errorbar, min_n=min_band_n, n_boot=n_boot, seed=seed))
            axis.set_ylabel(CURVE_LABELS.get(value, mpl_text(value)))
            axis.set_xlabel("training step")
            twin = axis.twinx()
            vpart = facets.select_panel(valid, panel_cols, key).sort_values(["run_id", "step"])
            if len(vpart):
                drawn.append(bands.mean_line(twin, vpart, "step", "validation", color=VALIDATION_COLOR,
                                             errorbar=errorbar, min_n=min_band_n, n_boot=n_boot,
                                             seed=seed, linestyle="--"))
                rights.append(twin)
            else:
                twin.text(0.5, 0.5, "no validation rows", transform=twin.transAxes,
                          ha="center", va="center", fontsize="small", color=VALIDATION_COLOR)
            twin.set_ylabel(mpl_text(right_label), color=VALIDATION_COLOR)
            twin.tick_params(axis="y", colors=VALIDATION_COLOR)
            twin.grid(False)
            twin.spines["right"].set_visible(True)
            lefts.append(axis)
            group = dict(zip(panel_cols, key, strict=True))["group"]
            described = group_title(members, group, result_label)
            other = [t for t in title.split(" · ") if not t.startswith("group: ")]
            axis.set_title("\n".join(t for t in (" · ".join(other), described) if t), fontsize="small")
        _same_ylim(lefts)
        _same_ylim(rights)
        handles = [
            Line2D([], [], color=TRACE_COLOR, lw=2),
            Line2D([], [], color=VALIDATION_COLOR, lw=2, ls="--"),
        ]
        labels = [
            CURVE_LABELS.get(value, mpl_text(value)).replace("\n", " ") + " (left)",
            mpl_text(right_label.replace("\n", " ") + " (right)"),
        ]
        legend_title = f"mean over runs\n{bands.spread_note(drawn, errorbar, min_band_n)}"
        facets.add_legend(fig, ax, handles, labels, legend_title)
        facets.finish(fig, _without_group(common), ax is None)
    return fig


def _without_group(title: str) -> str:
    """A shared figure title without the ``group: g`` part (the panels say which group)."""
    return " · ".join(t for t in title.split(" · ") if not t.startswith("group: "))
