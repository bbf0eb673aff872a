"""tr(F) curves: per method with seed bands (FUN Fig. 3) and against validation (Fig. 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

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

BAND_LABELS = {"sd": "±1 sd", "se": "±1 se", "ci": "95% bootstrap CI", "pi": "95% interval"}


def _band_label(errorbar: Any) -> str:
    if errorbar is None:
        return "no band"
    name = errorbar[0] if isinstance(errorbar, tuple) else errorbar
    return BAND_LABELS.get(str(name), str(errorbar))


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
    at each step (seaborn semantics; "sd" by default).
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

    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap, what=what)
        for axis, key, title in panels:
            part = facets.select_panel(data, panel_cols, key).sort_values([hue, "run_id", "step"])
            sns.lineplot(
                data=part, x="step", y=value, hue=hue, hue_order=[h for h in hues if h in set(part[hue])],
                palette=colors, errorbar=errorbar, n_boot=n_boot, seed=seed,
                estimator="mean", legend=False, ax=axis,
            )
            axis.set_title(title)
            axis.set_xlabel("training step")
            axis.set_ylabel(CURVE_LABELS.get(value, mpl_text(value)))
            if logy:
                axis.set_yscale("log")
        handles = [Line2D([], [], color=colors[h], lw=2) for h in hues]
        labels = [mpl_text(f"{h} (n={int(n_runs.get(h, 0))})") for h in hues]
        facets.add_legend(fig, ax, handles, labels, f"{mpl_text(hue)}, runs\nband: {_band_label(errorbar)}")
        facets.finish(fig, common, ax is None)
    return fig


def _validation_frame(
    metrics: pd.DataFrame, split: str, metric: str | None, language: str | None, what: str
) -> tuple[pd.DataFrame, str]:
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
    # Several languages at one step: their mean is the run's validation value.
    part = part.groupby(["run_id", "step"], as_index=False)["value"].mean()
    return part.rename(columns={"value": "validation"}), metric


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
    n_boot: int = 1000,
    seed: int = 0,
    result_label: str = "avg. result",
    col_wrap: int = 3,
    ax: Axes | None = None,
) -> Figure:
    """Normalised tr(F) (left axis) and the validation metric (right axis), one panel per group.

    ``groups`` is ``group_runs`` output (``run_id, value, group, leader``),
    optionally with model/task/estimator columns; the panel title gives each
    group's mean result (``value``) and its number of runs. Lines are means over
    the group's runs, bands ``errorbar`` over those runs. Validation rows are
    ``metrics`` rows of ``split`` and ``metric`` (mean over languages unless
    ``language`` is given).
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
    valid, metric = _validation_frame(metrics, split, metric, language, what)
    valid = valid.merge(grp[grp_cols], on="run_id", how="inner")
    keys = facets.panel_keys(grp, panel_cols)

    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap, panel_size=(3.6, 2.7), what=what)
        for axis, key, title in panels:
            members = facets.select_panel(grp, panel_cols, key)
            part = facets.select_panel(trace, panel_cols, key).sort_values(["run_id", "step"])
            if len(part):
                sns.lineplot(data=part, x="step", y=value, color=TRACE_COLOR, errorbar=errorbar,
                             n_boot=n_boot, seed=seed, legend=False, ax=axis)
            axis.set_ylabel(CURVE_LABELS.get(value, mpl_text(value)))
            axis.set_xlabel("training step")
            twin = axis.twinx()
            vpart = facets.select_panel(valid, panel_cols, key).sort_values(["run_id", "step"])
            if len(vpart):
                sns.lineplot(data=vpart, x="step", y="validation", color=VALIDATION_COLOR,
                             linestyle="--", errorbar=errorbar, n_boot=n_boot, seed=seed,
                             legend=False, ax=twin)
            else:
                twin.text(0.5, 0.5, "no validation rows", transform=twin.transAxes,
                          ha="center", va="center", fontsize="small", color=VALIDATION_COLOR)
            twin.set_ylabel(mpl_text(f"{split} {metric}"), color=VALIDATION_COLOR)
            twin.tick_params(axis="y", colors=VALIDATION_COLOR)
            twin.grid(False)
            twin.spines["right"].set_visible(True)
            mean_result = pd.to_numeric(members["value"], errors="coerce").mean()
            result = "n/a" if not np.isfinite(mean_result) else f"{mean_result:.2f}"
            stats = mpl_text(f"{result_label} {result}, n={members['run_id'].nunique()} runs")
            axis.set_title("\n".join(t for t in (title, stats) if t), fontsize="small")
        handles = [
            Line2D([], [], color=TRACE_COLOR, lw=2),
            Line2D([], [], color=VALIDATION_COLOR, lw=2, ls="--"),
        ]
        labels = [
            CURVE_LABELS.get(value, mpl_text(value)).replace("\n", " ") + " (left)",
            mpl_text(f"{split} {metric} (right)"),
        ]
        facets.add_legend(fig, ax, handles, labels, f"mean over runs\nband: {_band_label(errorbar)}")
        facets.finish(fig, common, ax is None)
    return fig
