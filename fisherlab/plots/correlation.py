"""Scatter plots of one quantity against a result, with a fit, a CI band and r in the title.

- :func:`plot_feature_vs_result`: a tr(F)-curve feature vs the transfer result (FUN Sec. 5.2).
- :func:`plot_trace_vs_accuracy`: final tr(F) vs source accuracy by regulariser and
  weight (Stickland & Murray Fig. 1).
- :func:`plot_two_stage_gain`: gain from target-language fine-tuning vs tr(F) after the
  source stage (Stickland & Murray Fig. 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats as sps

from fisherlab.plots import _facets as facets
from fisherlab.plots.style import PALETTE, mpl_text, paper_style, resolve_palette
from fisherlab.spec.regularisers import regulariser_family

#: Marker per canonical regulariser kind, as in Stickland & Murray Fig. 1 (others cycle). A run's
#: regulariser label (``consistency/dropout``, an alias like ``fpen``) maps to its kind through
#: :func:`fisherlab.spec.regulariser_family`.
REGULARISER_MARKERS = {"consistency": "X", "fisher_penalty": "o", "l2": "s", "none": "D"}
OTHER_MARKERS = ("^", "v", "P", "<", ">", "*", "h")

#: Axis labels (with units) of the ``curve_features`` of a per-block tr(F) curve.
FEATURE_LABELS = {
    "peak_value": "peak tr(F) per trainable block",
    "peak_step": "step of the peak (training steps)",
    "learning_period": "learning period (training steps)",
    "area": "area under the curve (tr(F) × steps)",
    "early_mean": "early mean tr(F) per trainable block",
    "post_peak_decay": "post-peak decay (fraction of the peak)",
}


def stats_title(
    stats: pd.DataFrame | None,
    panel_cols: list[str],
    key: tuple[str, ...],
    part: pd.DataFrame,
    x: str,
    y: str,
    method: str,
) -> str:
    """r [CI] and n, then p (and Holm p) from the matching ``stats`` row, else a plain scipy r.

    When ``x`` or ``y`` has one value in every run of the panel, r is undefined and the
    title says so (instead of "r = n/a")."""
    for column in (x, y):
        constant = _constant_value(part, column)
        if constant is not None:
            name = "result" if column == y else "x"
            return f"{name} is {constant:g} in all {len(part)} runs: no correlation"
    row = None
    if stats is not None and len(stats):
        match = stats
        for c, v in zip(panel_cols, key, strict=True):
            if c in match.columns:
                match = match.loc[match[c].astype(str) == v]
        if len(match) == 1:
            row = match.iloc[0]
        elif len(match) > 1:
            raise ValueError(
                f"stats has {len(match)} rows for panel {dict(zip(panel_cols, key, strict=True))}; "
                "give one row per panel (columns named like the panel columns)"
            )
    if row is not None:
        name = str(row.get("method", method)).capitalize()
        r, n = _num(row, "r"), int(_num(row, "n")) if np.isfinite(_num(row, "n")) else 0
        line1 = f"{name} r = {r:.2f}" if np.isfinite(r) else f"{name} r = n/a"
        low, high = _num(row, "ci_low"), _num(row, "ci_high")
        if np.isfinite(low) and np.isfinite(high):
            line1 += f" [{low:.2f}, {high:.2f}]"
        unit = row.get("unit", "run")
        unit = "run" if unit is None or pd.isna(unit) else str(unit)
        if n != 1 and unit in ("run", "seed", "language"):
            unit += "s"
        line1 += f", n = {n} {unit}"
        parts = []
        if np.isfinite(_num(row, "p_value")):
            parts.append(format_p(_num(row, "p_value")))
        if np.isfinite(_num(row, "p_holm")):
            parts.append("Holm " + format_p(_num(row, "p_holm")))
        return mpl_text(line1 + ("\n" + ", ".join(parts) if parts else ""))
    n = len(part)
    if n < 3 or part[x].nunique() < 2 or part[y].nunique() < 2:
        return f"n = {n} (too few for r)"
    fn = {"spearman": sps.spearmanr, "kendall": sps.kendalltau}.get(method, sps.pearsonr)
    res = fn(part[x].to_numpy(float), part[y].to_numpy(float))
    return f"{method.capitalize()} r = {float(res[0]):.2f}, {format_p(float(res[1]))}, n = {n} (no CI)"


def _constant_value(part: pd.DataFrame, column: str) -> float | None:
    """The one value of ``column`` when ``part`` has two or more rows that all share it."""
    values = pd.to_numeric(part[column], errors="coerce").to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2 or not np.allclose(values, values[0], rtol=1e-12, atol=0.0):
        return None
    return float(values[0])


def _num(row: pd.Series, column: str) -> float:
    """``row[column]`` as a float; NaN when absent or not a number."""
    try:
        return float(row[column]) if column in row.index else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def format_p(p: float) -> str:
    """``p = 0.031`` or ``p < 0.001``."""
    return "p < 0.001" if p < 1e-3 else f"p = {p:.2g}"


def _fit(axis: Axes, part: pd.DataFrame, x: str, y: str, ci: int | None, n_boot: int,
         seed: int, logx: bool) -> None:
    """Least-squares line (in log x when ``logx``) with a bootstrap CI band.

    No fit without variation in x or y: a flat fit of a constant y has a band of
    rounding noise (±1e-11) that would set the y-limits."""
    if len(part) < 3 or part[x].nunique() < 2 or part[y].nunique() < 2:
        return
    if n_boot <= 0:
        ci = None
    sns.regplot(data=part, x=x, y=y, scatter=False, ci=ci, n_boot=n_boot, seed=seed,
                logx=logx, truncate=True, color="0.35", line_kws={"lw": 1}, ax=axis)


def _prepare(frame: pd.DataFrame, x: str, y: str, panel: Any, label_cols: list[str],
             estimator_policy: str, what: str, logx: bool) -> tuple[pd.DataFrame, list[str], list]:
    facets.require_columns(frame, [x, y, *label_cols], what)
    panel_cols = [c for c in facets.as_list(panel) if c in frame.columns]
    panel_cols = facets.estimator_panels(frame, panel_cols, estimator_policy, what)
    data = facets.finite_rows(frame, [x, y])
    if logx:
        data = data.loc[data[x] > 0]
    data = facets.label_columns(data, [*label_cols, *panel_cols])
    keys = facets.panel_keys(data, panel_cols) if len(data) else []
    return data, panel_cols, keys


def plot_feature_vs_result(
    points: pd.DataFrame,
    *,
    x: str = "value",
    y: str = "result",
    hue: str | None = "method",
    panel: str | Sequence[str] | None = ("model", "task", "estimator", "feature"),
    stats: pd.DataFrame | None = None,
    method: str = "spearman",
    estimator_policy: str = "facet",
    ci: int | None = 95,
    n_boot: int = 1000,
    seed: int = 0,
    logx: bool = False,
    xlabel: str | None = None,
    ylabel: str = "result",
    palette: Mapping[str, Any] | None = None,
    col_wrap: int = 3,
    drop_constant: bool = True,
    ax: Axes | None = None,
) -> Figure:
    """One point per run: a curve feature (``x``) against the result (``y``).

    ``points`` holds one row per run and feature (e.g. ``curve_features``
    output joined with each run's result and method). Each panel has a
    least-squares fit with a ``ci``% bootstrap band (``n_boot``, ``seed``) and,
    in the title, the correlation from the matching ``stats`` row
    (``correlate`` output: ``r, ci_low, ci_high, p_value, n, unit``, matched on
    the panel columns it has); without ``stats`` a plain scipy r and p.

    A panel whose ``x`` has the same value in every run (a feature constant across
    runs) has no correlation to show: with ``drop_constant`` (and a figure of our
    own) it is not drawn, and a note under the panels names it and its value; a
    drawn one says so in its title. If every panel is constant, ValueError.
    """
    what = "plot_feature_vs_result"
    labels = [hue] if hue else []
    data, panel_cols, keys = _prepare(points, x, y, panel, labels, estimator_policy, what, logx)
    hues = sorted(data[hue].unique()) if hue else []
    colors = resolve_palette(hues, palette) if hue else {}
    dropped: list[str] = []
    if drop_constant and ax is None and keys:
        _, short = facets.facet_titles(panel_cols, keys, own_figure=False)
        kept = []
        for key, name in zip(keys, short, strict=True):
            constant = _constant_value(facets.select_panel(data, panel_cols, key), x)
            if constant is None:
                kept.append(key)
            else:
                dropped.append(f"{name or facets.panel_title(panel_cols, key)} = {constant:g}")
        if not kept:
            raise ValueError(f"{what}: {x} is the same in every run of every panel "
                             f"({'; '.join(dropped)}): nothing to correlate")
        keys = kept
    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap, what=what)
        for axis, key, title in panels:
            part = facets.select_panel(data, panel_cols, key)
            _fit(axis, part, x, y, ci, n_boot, seed, logx)
            _scatter(axis, part, x, y, hue, hues, colors)
            feature = dict(zip(panel_cols, key, strict=True)).get("feature")
            _label_panel(axis, title, stats_title(stats, panel_cols, key, part, x, y, method),
                         xlabel or FEATURE_LABELS.get(str(feature), feature) or x, ylabel, logx)
        if ax is None:
            _share_result_range([a for a, _, _ in panels], data.loc[data[x].notna(), y])
        if hue:
            _hue_legend(fig, ax, hue, hues, colors)
        if dropped:
            note = "Not drawn, the same value in every run (no correlation): " + "; ".join(dropped)
            fig.supxlabel(mpl_text(facets.wrap_title(note, int(fig.get_figwidth() * 16), sep="; ")),
                          fontsize="small", ha="center")
        facets.finish(fig, common, ax is None)
    return fig


def plot_trace_vs_accuracy(
    points: pd.DataFrame,
    *,
    x: str = "final_trace",
    y: str = "source_result",
    regulariser: str = "regulariser",
    weight: str | None = "weight",
    panel: str | Sequence[str] | None = ("model", "task", "estimator"),
    stats: pd.DataFrame | None = None,
    method: str = "spearman",
    estimator_policy: str = "facet",
    logx: bool | str = "auto",
    fit: bool = True,
    ci: int | None = 95,
    n_boot: int = 1000,
    seed: int = 0,
    xlabel: str = "final tr(F), sum over trainable layer blocks",
    ylabel: str = "source-language accuracy",
    palette: Mapping[str, Any] | None = None,
    col_wrap: int = 3,
    ax: Axes | None = None,
) -> Figure:
    """Final tr(F) against source accuracy, one marker/colour per regulariser, labelled by weight.

    One row per run in ``points``. Markers follow Stickland & Murray
    (consistency ×, Fisher penalty ●, L2 ■); each point is annotated with its
    ``weight``. Optional fit, CI band and r in the title as in
    :func:`plot_feature_vs_result`. ``logx="auto"``: log scale when x spans more
    than a factor 10.
    """
    what = "plot_trace_vs_accuracy"
    if logx == "auto":  # log scale only when tr(F) spans more than a decade
        values = pd.to_numeric(points[x], errors="coerce") if x in points.columns else pd.Series([], dtype=float)
        values = values[np.isfinite(values.to_numpy(dtype=float))]
        logx = bool(len(values) and values.min() > 0 and values.max() / values.min() > 10)
    data, panel_cols, keys = _prepare(points, x, y, panel, [regulariser], estimator_policy, what, logx)
    kinds = sorted(data[regulariser].unique())
    colors = resolve_palette(kinds, palette)
    markers = _markers(kinds)
    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap, panel_size=(3.8, 3.0), what=what)
        for axis, key, title in panels:
            part = facets.select_panel(data, panel_cols, key)
            if fit:
                _fit(axis, part, x, y, ci, n_boot, seed, logx)
            for kind in kinds:
                rows = part.loc[part[regulariser] == kind]
                axis.scatter(rows[x], rows[y], color=colors[kind], marker=markers[kind], s=26, zorder=3)
                if weight is not None and weight in rows.columns:
                    for xv, yv, wv in zip(rows[x], rows[y], rows[weight], strict=True):
                        axis.annotate(_weight_text(wv), (xv, yv), xytext=(3, 3),
                                      textcoords="offset points", fontsize="x-small")
            _label_panel(axis, title, stats_title(stats, panel_cols, key, part, x, y, method),
                         xlabel, ylabel, logx)
        handles = [Line2D([], [], color=colors[k], marker=markers[k], lw=0) for k in kinds]
        title = mpl_text(regulariser if weight is None else f"{regulariser} (label: {weight})")
        facets.add_legend(fig, ax, handles, [mpl_text(k) for k in kinds], title)
        facets.finish(fig, common, ax is None)
    return fig


def plot_two_stage_gain(
    points: pd.DataFrame,
    *,
    x: str = "trace",
    y: str = "gain",
    hue: str | None = "language",
    panel: str | Sequence[str] | None = ("model", "task", "estimator"),
    stats: pd.DataFrame | None = None,
    method: str = "spearman",
    estimator_policy: str = "facet",
    logx: bool = False,
    ci: int | None = 95,
    n_boot: int = 1000,
    seed: int = 0,
    xlabel: str = "tr(F) after the source stage",
    ylabel: str = "target-language gain",
    col_wrap: int = 3,
    ax: Axes | None = None,
) -> Figure:
    """Gain of the second (target-language) stage against tr(F) after the first stage.

    One row per run and target language. Colours are per language (a
    colour-blind palette in sorted order), one fit over all points of a panel.
    """
    what = "plot_two_stage_gain"
    labels = [hue] if hue else []
    data, panel_cols, keys = _prepare(points, x, y, panel, labels, estimator_policy, what, logx)
    hues = sorted(data[hue].unique(), key=lambda v: facets.natural_key([v])) if hue else []
    colors = {h: PALETTE[i % len(PALETTE)] for i, h in enumerate(hues)}
    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap, what=what)
        for axis, key, title in panels:
            part = facets.select_panel(data, panel_cols, key)
            _fit(axis, part, x, y, ci, n_boot, seed, logx)
            _scatter(axis, part, x, y, hue, hues, colors)
            axis.axhline(0.0, color="0.3", lw=0.8)
            _label_panel(axis, title, stats_title(stats, panel_cols, key, part, x, y, method),
                         xlabel, ylabel, logx)
        if hue:
            _hue_legend(fig, ax, hue, hues, colors)
        facets.finish(fig, common, ax is None)
    return fig


def _share_result_range(axes: list[Axes], values: pd.Series, pad: float = 0.08) -> None:
    """One y range for every panel: the runs' results plus a margin.

    The panels show the same runs' results against different features; on their own
    ranges (set by each panel's regression band) equal results sat at different heights.
    A band wider than the results is cut at the axes (its CI is in the title)."""
    finite = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    if len(axes) < 2 or not len(finite):
        return
    low, high = float(finite.min()), float(finite.max())
    margin = pad * (high - low) if high > low else max(0.05 * abs(low), 0.5)
    for axis in axes:
        axis.set_ylim(low - margin, high + margin)


def _scatter(axis: Axes, part: pd.DataFrame, x: str, y: str, hue: str | None, hues: list[str],
             colors: Mapping[str, Any]) -> None:
    """One point per row, coloured by ``hue`` (dark grey without)."""
    sns.scatterplot(data=part, x=x, y=y, hue=hue, palette=colors if hue else None,
                    hue_order=[h for h in hues if h in set(part[hue])] if hue else None,
                    color=None if hue else "0.2", s=22, legend=False, ax=axis)


def _label_panel(axis: Axes, title: str, stats_line: str, xlabel: str, ylabel: str, logx: bool) -> None:
    """Axis labels, log x when asked, and the panel title above its statistics line."""
    if logx:
        axis.set_xscale("log")
    axis.set_xlabel(mpl_text(xlabel))
    axis.set_ylabel(mpl_text(ylabel))
    axis.set_title("\n".join(t for t in (title, stats_line) if t), fontsize="small")


def _hue_legend(fig: Figure, ax: Axes | None, hue: str, hues: list[str], colors: Mapping[str, Any]) -> None:
    handles = [Line2D([], [], color=colors[h], marker="o", lw=0) for h in hues]
    facets.add_legend(fig, ax, handles, [mpl_text(h) for h in hues], mpl_text(hue))


def _markers(kinds: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    others = iter(OTHER_MARKERS * (1 + len(kinds) // len(OTHER_MARKERS)))
    for kind in kinds:
        key = regulariser_family(kind) or kind.strip().lower().replace("-", "_").replace(" ", "_")
        out[kind] = REGULARISER_MARKERS.get(key) or next(others)
    return out


def _weight_text(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return mpl_text(value)
    return "" if not np.isfinite(number) else f"{number:g}"
