"""``build_report``: a run store in, an HTML report + figures + CSV tables + summary out.

Every figure is drawn from the tidy frames of ``fisherlab.analysis`` by a
``fisherlab.plots`` function. A figure whose inputs are absent (no regulariser
runs, no validation curve, ...) is skipped with the reason; every item the
reader skipped or repaired is listed with its reason. Nothing is written
outside ``out_dir`` and the file names never derive from run names. The same
input and options give the same files (seeded bootstraps, dateless PDFs).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fisherlab.report.options import (
    FIGURES,
    REGULARISER_COLUMNS,
    WEIGHT_COLUMNS,
    ReportError,
    ReportOptions,
    ReportResult,
)

RUN_TABLE_COLUMNS = ["run_id", "status", "method", "model", "task", "task_module", "seed", "k",
                     "estimator", "source_language", "result_metric", "source_score", "xling_avg",
                     "lowest_language", "lowest_score"]


class SkipFigure(Exception):
    """A figure's inputs are absent; the message is shown in the report."""


@dataclass
class Drawn:
    """A drawn figure with its caption and the unit its bands/statistics replicate over."""

    figure: Any
    caption: str
    unit: str
    notes: list[str] = field(default_factory=list)


def safe_filename(name: str, max_len: int = 80) -> str:
    """A file name that stays in its folder: ``[A-Za-z0-9._-]`` only, no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return cleaned[:max_len] or "unnamed"


# ------------------------------------------------------------------------------ inputs
def _load(runset_or_paths: Any, options: ReportOptions) -> Any:
    from fisherlab.analysis import RunSet, load_runs
    from fisherlab.analysis.loading import NoRunsError

    if isinstance(runset_or_paths, RunSet):
        runset = runset_or_paths
    else:
        paths = [runset_or_paths] if isinstance(runset_or_paths, (str, os.PathLike)) else list(runset_or_paths)
        if not paths:
            raise ReportError("no input: give run directories, parents of run directories or globs")
        try:
            runset = load_runs(paths, progress=options.progress)
        except NoRunsError as err:
            raise ReportError(str(err)) from err
    if len(runset.runs) == 0:
        raise ReportError("no runs to report on (the run set is empty)")
    return runset


def _run_meta(runset: Any) -> pd.DataFrame:
    """One row per run: method, model, task, estimator (as measured), result, source score."""
    runs = runset.runs
    meta = runs[["run_id"]].copy()
    for column in ("method", "model", "task", "seed", "xling_avg", "result_metric"):
        meta[column] = runs[column] if column in runs.columns else np.nan
    meta["estimator"] = [_estimator_label(v) for v in runs.get("estimator", [None] * len(runs))]
    fisher = runset.fisher
    if len(fisher) and "estimator" in fisher.columns:
        measured = (fisher.dropna(subset=["estimator"]).groupby("run_id")["estimator"]
                    .agg(lambda s: "+".join(sorted({str(v) for v in s}))))
        meta["estimator"] = [measured.get(r, e) for r, e in zip(meta["run_id"], meta["estimator"], strict=True)]
    results = runset.results
    if len(results):
        source = results.loc[results["is_source"].astype(bool)].groupby("run_id")["value"].first()
        meta["source_score"] = meta["run_id"].map(source).astype(float)
    else:
        meta["source_score"] = np.nan
    meta["xling_avg"] = pd.to_numeric(meta["xling_avg"], errors="coerce").astype(float)
    return meta


def _estimator_label(value: Any) -> str:
    try:
        missing = value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        missing = False
    return "(unknown)" if missing else str(value)


def _pick_column(columns: Iterable[str], wanted: str | None, candidates: Iterable[str],
                 what: str) -> str | None:
    columns = list(columns)
    if wanted is not None:
        if wanted not in columns:
            raise SkipFigure(f"{what} column {wanted!r} is not a run column")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    return None


# ------------------------------------------------------------------------------ context
@dataclass
class _Context:
    runset: Any
    options: ReportOptions
    meta: pd.DataFrame
    palette: dict[str, Any]
    curves: pd.DataFrame | None = None
    features: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    table_units: dict[str, str] = field(default_factory=dict)
    table_captions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_table(self, name: str, frame: pd.DataFrame, caption: str, unit: str) -> None:
        self.tables[name] = frame
        self.table_captions[name] = caption
        self.table_units[name] = unit

    def result_runs(self) -> pd.DataFrame:
        """Runs with a finite result (``xling_avg``), restricted to ``options.metric``."""
        meta = self.meta.loc[np.isfinite(self.meta["xling_avg"].to_numpy(dtype=float))]
        if self.options.metric is not None:
            meta = meta.loc[meta["result_metric"].astype(str) == self.options.metric]
        return meta


def _curves(ctx: _Context) -> pd.DataFrame:
    from fisherlab.analysis import trace_curves

    if ctx.curves is None:
        if len(ctx.runset.fisher) == 0:
            ctx.curves = pd.DataFrame(columns=["run_id", "step", "trace_sum", "n_trainable", "trace",
                                               "trace_smooth", "trace_scaled"])
        else:
            try:
                ctx.curves = trace_curves(ctx.runset, window=ctx.options.window, normalise=True, scale01=True)
            except ValueError as err:  # no block with a layer index: count every block
                ctx.notes.append(f"tr(F) curves include every block (not only layer blocks): {err}")
                ctx.curves = trace_curves(ctx.runset, window=ctx.options.window, normalise=True,
                                          scale01=True, layers_only=False)
    return ctx.curves


def _features(ctx: _Context) -> pd.DataFrame:
    from fisherlab.analysis import curve_features

    if ctx.features is None:
        curves = _curves(ctx)
        ctx.features = curve_features(curves, value="trace_smooth", early_fraction=ctx.options.early_fraction)
    return ctx.features


def _final_trace(ctx: _Context) -> pd.DataFrame:
    """``run_id, final_trace``: tr(F) summed over the trainable layer blocks (head excluded) at each run's last probe."""
    curves = _curves(ctx)
    ok = curves.loc[np.isfinite(pd.to_numeric(curves["trace_sum"], errors="coerce").to_numpy(dtype=float))]
    if ok.empty:
        return pd.DataFrame(columns=["run_id", "final_trace", "final_step"])
    last = ok.sort_values(["run_id", "step"], kind="stable").groupby("run_id", sort=True).tail(1)
    return last.rename(columns={"trace_sum": "final_trace", "step": "final_step"})[
        ["run_id", "final_trace", "final_step"]]


# ------------------------------------------------------------------------------ figures
def _fig_trace(ctx: _Context) -> Drawn:
    from fisherlab.plots import plot_trace_curves

    curves = _curves(ctx)
    if curves.empty:
        raise SkipFigure("no run has tr(F) measurements (fisher.jsonl)")
    fig = plot_trace_curves(curves, ctx.meta, value="trace_smooth", panel=("model", "task", "estimator"),
                            estimator_policy=ctx.options.estimator_policy, palette=ctx.palette,
                            seed=ctx.options.seed)
    return Drawn(fig, "Mean tr(F) per trainable layer block (sum over the blocks trainable at that "
                      f"step / their number), centred moving average over {ctx.options.window} probe "
                      "points; one line per method (n = its runs, in the legend); band ±1 sd over the "
                      "runs where a method has at least 3 runs, otherwise its runs as thin lines.",
                 "runs (seeds) of a method at each probe step; n per method in the legend")


def _fig_trace_validation(ctx: _Context) -> Drawn:
    from fisherlab.analysis import group_runs
    from fisherlab.plots import plot_trace_validation

    curves = _curves(ctx)
    if curves.empty:
        raise SkipFigure("no run has tr(F) measurements (fisher.jsonl)")
    with_result = ctx.result_runs()
    with_result = with_result.loc[with_result["run_id"].isin(set(curves["run_id"]))]
    if with_result.empty:
        raise SkipFigure("no run has both tr(F) measurements and a result (results.json)")
    metrics = ctx.runset.metrics
    split = ctx.options.validation_split
    valid = metrics.loc[metrics["split"].astype(str) == split]
    valid = valid.loc[valid["run_id"].isin(set(with_result["run_id"]))]
    if valid.empty:
        raise SkipFigure(f"no metrics rows with split {split!r} for runs with results")
    metric = ctx.options.validation_metric
    found = sorted({str(m) for m in valid["metric"]})
    notes = []
    if metric is None:
        preferred = [m for m in with_result["result_metric"].dropna().astype(str).unique() if m in found]
        metric = sorted(preferred)[0] if preferred else found[0]
        if len(found) > 1:
            notes.append(f"validation metrics {found} found; drawn: {metric!r} (choose with validation_metric)")
    elif metric not in found:
        raise SkipFigure(f"validation metric {metric!r} not found; split {split!r} has {found}")
    values = with_result[["run_id", "xling_avg", "model", "task", "estimator", "method"]].rename(
        columns={"xling_avg": "value"})
    for column in ("model", "task", "estimator"):
        values[column] = values[column].astype(object).where(values[column].notna(), "(unknown)").astype(str)
    groups = group_runs(values, delta=ctx.options.delta, by=["model", "task", "estimator"])
    ctx.add_table("groups", groups, f"Groups of runs within {ctx.options.delta:g} point(s) of the best "
                  "ungrouped run (FUN footnote 10), per model, task and estimator.",
                  "runs; value = the run's cross-lingual average")
    fig = plot_trace_validation(curves, metrics, groups, value="trace_scaled", metric=metric, split=split,
                                panel=("model", "task", "estimator", "group"), result_label="cross-lingual avg.",
                                estimator_policy=ctx.options.estimator_policy, seed=ctx.options.seed)
    langs = sorted({str(v) for v in valid.loc[valid["metric"].astype(str) == metric, "language"].dropna()})
    return Drawn(fig, "tr(F) per trainable block (smoothed, scaled to [0, 1] per run; left axis) and the "
                      f"{split} {metric} on {', '.join(langs) or 'the recorded languages'} (mean over them "
                      "when several; right axis). Runs are grouped by cross-lingual average, best first: "
                      f"each group holds the ungrouped runs within {ctx.options.delta:g} point(s) of its best "
                      "run (group 0 is the best); a panel's title gives its runs' number, methods and range "
                      "of cross-lingual averages. All panels share the left and the right axis ranges.",
                 "runs in the group (band ±1 sd where a group has at least 3 runs, otherwise its runs "
                 "as thin lines)", notes)


def _fig_order(ctx: _Context) -> Drawn:
    from fisherlab.analysis import mean_unfreeze_position, order_agreement, unfreezing_orders
    from fisherlab.plots import plot_unfreezing_order

    orders = unfreezing_orders(ctx.runset)
    if orders.empty:
        raise SkipFigure("no run has unfreezing events with layer blocks (schedule.jsonl)")
    spread = orders.groupby("run_id")["position"].nunique()
    sequential_runs = set(spread.index[spread > 1])
    orders = orders.loc[orders["run_id"].isin(sequential_runs)]
    if orders.empty:
        raise SkipFigure("no run unfroze its layers over several events (all-at-once schedules only)")
    for column in ("model", "task"):
        orders[column] = orders[column].astype(object).where(orders[column].notna(), "(unknown)").astype(str)
    positions = mean_unfreeze_position(orders, by=("model", "task", "method"))
    ctx.add_table("unfreeze_positions", positions, "Mean 0-based position at which each layer was "
                  "unfrozen, per model, task and method (runs that unfroze over several events).",
                  "runs; n = runs per method")
    agreement = order_agreement(orders)
    ctx.add_table("order_agreement", agreement, "Kendall tau-b of each run's unfreezing order against "
                  "the top-down order (1 = top-down).", "one row per run")
    fig = plot_unfreezing_order(positions, panel=("model", "task"), palette=ctx.palette)
    return Drawn(fig, "Mean position (0 = first) at which each layer was unfrozen, per method (n = its "
                      "runs, in the legend); error bars ±1 sd over runs where a method has at least 3 runs; "
                      "the dashed diagonal is gradual unfreezing's top-down order.",
                 "runs of a method (error bars ±1 sd, n ≥ 3)")


def _fig_relative(ctx: _Context) -> Drawn:
    from fisherlab.plots import plot_relative_performance

    baseline = _baseline(ctx)
    unit, base_n = _relative_unit_and_n(ctx, baseline)
    methods = ctx.tables.get("methods")
    if methods is not None and "diff" in methods.columns and _any_finite(methods["diff"]):
        # The difference of means with its stratified bootstrap CI (compare_methods).
        data = methods.loc[_finite_mask(methods["diff"])]
        fig = plot_relative_performance(data, value="diff", x="task", hue="method", panel=("model",),
                                        error=("diff_ci_low", "diff_ci_high"), palette=ctx.palette,
                                        ylabel=f"cross-lingual avg. − {baseline}", unit=unit, n="n_seeds",
                                        reference_label=f"baseline {baseline} ({base_n})")
        return Drawn(fig, f"Cross-lingual average (without the source language) of each method minus that "
                          f"of the baseline {baseline!r} ({base_n} runs), in {unit}, per task and model; n = "
                          "runs (seeds) of each method in the legend; error bars: 95% bootstrap CI of the "
                          "difference (runs resampled within each target language), drawn where the method "
                          "has at least 3 runs.",
                     "runs (seeds) per method, model and task; target languages as bootstrap strata")
    table = ctx.tables.get("results")
    if table is None or table.empty:
        raise SkipFigure("no run has results (results.json)")
    if "rel_to_baseline" not in table.columns or not _any_finite(table["rel_to_baseline"]):
        raise SkipFigure(f"no baseline to compare with (baseline method {baseline!r} has no results "
                         "in any model/task cell; choose one with --baseline)")
    data = table.loc[table["method"].astype(str) != str(baseline)]
    if data.empty:
        raise SkipFigure("only the baseline method has results")
    fig = plot_relative_performance(data, value="rel_to_baseline", x="task", hue="method",
                                    panel=("model",), error="xling_std", palette=ctx.palette,
                                    ylabel=f"cross-lingual avg. − {baseline}", unit=unit, n="n_seeds",
                                    reference_label=f"baseline {baseline} ({base_n})")
    return Drawn(fig, f"Cross-lingual average (without the source language) of each method minus that "
                      f"of the baseline {baseline!r} ({base_n} runs), in {unit}, per task and model; n = "
                      "runs (seeds) of each method in the legend; error bars ±1 sd over the seeds of the "
                      "method, drawn where it has at least 3 runs.", "runs (seeds) per method, model and task")


def _relative_unit_and_n(ctx: _Context, baseline: str) -> tuple[str, str]:
    """The y unit of the relative-performance figure (``accuracy points``) and the baseline's n."""
    from fisherlab.plots._bands import n_text

    metrics = sorted({str(m) for m in ctx.result_runs()["result_metric"].dropna()})
    unit = f"{'/'.join(metrics) or 'result'} points"
    results = ctx.tables.get("results")
    counts = [] if results is None or "n_seeds" not in results.columns else \
        results.loc[results["method"].astype(str) == str(baseline), "n_seeds"]
    return unit, n_text(counts)


def _finite_mask(values: pd.Series) -> np.ndarray:
    return np.isfinite(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))


def _any_finite(values: pd.Series) -> bool:
    return bool(_finite_mask(values).any())


def _fig_feature_result(ctx: _Context) -> Drawn:
    from fisherlab.plots import plot_feature_vs_result

    features = _features(ctx)
    if features.empty:
        raise SkipFigure("no run has tr(F) measurements (fisher.jsonl)")
    result_runs = ctx.result_runs()
    points = features.merge(result_runs[["run_id", "method", "model", "task", "estimator", "xling_avg"]],
                            on="run_id", how="inner").rename(columns={"xling_avg": "result"})
    points = points.loc[np.isfinite(points["value"].to_numpy(dtype=float))]
    if points.empty:
        raise SkipFigure("no run has both a tr(F) curve and a result")
    stats = ctx.tables.get("correlations")
    fig = plot_feature_vs_result(points, x="value", y="result", hue="method",
                                 panel=("model", "task", "estimator", "feature"), stats=_panel_stats(stats),
                                 method=ctx.options.correlation, palette=ctx.palette,
                                 estimator_policy=ctx.options.estimator_policy,
                                 n_boot=min(ctx.options.n_boot, 1000), seed=ctx.options.seed,
                                 ylabel="cross-lingual avg.")
    return Drawn(fig, f"Each tr(F)-curve feature against the run's cross-lingual average; least-squares "
                      f"line with a 95% bootstrap band; {ctx.options.correlation} r with a bootstrap CI "
                      "and a permutation p-value (Holm-corrected over the grid) in each title. A feature "
                      "with the same value in every run has no correlation and is not drawn (named, with "
                      "its value, under the panels). All panels share the y range of the results (a "
                      "wider band is cut at the axes).",
                 "runs (one point per run)")


def _panel_stats(stats: pd.DataFrame | None) -> pd.DataFrame | None:
    """The correlation table with a ``feature`` column naming the x variable of each row."""
    if stats is None or stats.empty:
        return None
    out = stats.copy()
    if "feature" not in out.columns and "x" in out.columns:
        out["feature"] = out["x"]
    for column in ("model", "task", "estimator"):
        if column in out.columns:
            out[column] = out[column].astype(object).where(out[column].notna(), "(unknown)").astype(str)
    return out


def _fig_regulariser(ctx: _Context) -> Drawn:
    from fisherlab.plots import plot_trace_vs_accuracy

    runs = ctx.runset.runs
    kind_col = _pick_column(runs.columns, ctx.options.regulariser_column, REGULARISER_COLUMNS, "regulariser")
    if kind_col is None:
        raise SkipFigure("no regulariser runs (none of the run columns "
                         f"{list(REGULARISER_COLUMNS[:4])}... is present; name one with regulariser_column)")
    weight_col = _pick_column(runs.columns, ctx.options.weight_column, WEIGHT_COLUMNS, "weight")
    cols = ["run_id", kind_col] + ([weight_col] if weight_col else [])
    data = runs[cols].rename(columns={kind_col: "regulariser", **({weight_col: "weight"} if weight_col else {})})
    data["regulariser"] = data["regulariser"].astype(object).where(data["regulariser"].notna(), "none").astype(str)
    if set(data["regulariser"]) <= {"none"}:  # train.py writes kind "none" for unregularised runs
        raise SkipFigure(f"no regulariser runs (every run has {kind_col} = 'none')")
    data = data.merge(_final_trace(ctx), on="run_id").merge(
        ctx.meta[["run_id", "model", "task", "estimator", "source_score"]], on="run_id")
    data = data.loc[np.isfinite(data["source_score"].to_numpy(dtype=float))]
    if data.empty:
        raise SkipFigure("no regulariser run has both a final tr(F) and a source-language result")
    stats = _point_stats(ctx, data, "final_trace", "source_score")
    fig = plot_trace_vs_accuracy(data, x="final_trace", y="source_score", regulariser="regulariser",
                                 weight="weight" if weight_col else None, stats=stats,
                                 estimator_policy=ctx.options.estimator_policy,
                                 n_boot=min(ctx.options.n_boot, 1000), seed=ctx.options.seed,
                                 palette=ctx.palette, method=ctx.options.correlation)
    return Drawn(fig, f"tr(F) summed over the trainable layer blocks at each run's last probe step against the "
                      f"source-language result; marker and colour = regulariser ({kind_col}), label = "
                      f"weight ({weight_col or 'not found'}); least-squares line with a 95% bootstrap band; "
                      f"{ctx.options.correlation} r with a bootstrap CI and a permutation p-value in the title.",
                 "runs (one point per run)")


def _point_stats(ctx: _Context, data: pd.DataFrame, x: str, y: str) -> pd.DataFrame | None:
    """``correlate`` over runs (one row per run in ``data``) per model, task and estimator."""
    from fisherlab.analysis import correlate

    if data["run_id"].duplicated().any():
        return None
    frame = data[["run_id", x, y, "model", "task", "estimator"]].copy()
    for column in ("model", "task", "estimator"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "(unknown)").astype(str)
    stats = correlate(frame, None, x=x, y=y, method=ctx.options.correlation, n_boot=ctx.options.n_boot,
                      n_perm=ctx.options.n_perm, seed=ctx.options.seed, by=("model", "task", "estimator"))
    return _panel_stats(stats)


def _fig_two_stage(ctx: _Context) -> Drawn:
    from fisherlab.plots import plot_two_stage_gain

    split = ctx.options.two_stage_split
    metrics = ctx.runset.metrics
    gains = metrics.loc[metrics["split"].astype(str) == split]
    if gains.empty:
        raise SkipFigure(f"no two-stage runs (no metrics rows with split {split!r})")
    gains = gains.sort_values(["run_id", "step"], kind="stable").groupby(
        ["run_id", "language", "metric"], dropna=False, sort=True).tail(1)
    data = gains.rename(columns={"value": "gain"})[["run_id", "language", "metric", "gain"]]
    data = data.merge(_final_trace(ctx), on="run_id").merge(
        ctx.meta[["run_id", "model", "task", "estimator"]], on="run_id")
    if data.empty:
        raise SkipFigure("no two-stage run has tr(F) measurements")
    fig = plot_two_stage_gain(data, x="final_trace", y="gain", hue="language",
                              estimator_policy=ctx.options.estimator_policy,
                              n_boot=min(ctx.options.n_boot, 1000), seed=ctx.options.seed,
                              method=ctx.options.correlation)
    return Drawn(fig, f"Gain on the target language from the second (target-language) stage (metrics "
                      f"rows with split {split!r}, last step) against tr(F) summed over the trainable layer blocks "
                      f"at the last probe of the run. The {ctx.options.correlation} r and p in the title treat "
                      "every point as independent, although the languages of one run share its tr(F).",
                 "runs x target languages (one point each)")


FIGURE_BUILDERS: dict[str, Callable[[_Context], Drawn]] = {
    "trace": _fig_trace,
    "trace_validation": _fig_trace_validation,
    "order": _fig_order,
    "relative": _fig_relative,
    "feature_result": _fig_feature_result,
    "regulariser": _fig_regulariser,
    "two_stage": _fig_two_stage,
}


# ------------------------------------------------------------------------------ tables
def _baseline(ctx: _Context) -> str:
    if ctx.options.baseline is not None:
        return ctx.options.baseline
    methods = set(ctx.meta["method"].astype(str))
    for candidate in ("full", "standard"):
        if candidate in methods:
            return candidate
    return sorted(methods)[0]


def _compute_tables(ctx: _Context) -> None:
    from fisherlab.analysis import compare_methods, correlation_grid, result_table
    from fisherlab.analysis.features import features_wide

    opts = ctx.options
    runs = ctx.runset.runs
    shown = [c for c in RUN_TABLE_COLUMNS if c in runs.columns]
    run_table = runs[shown].copy()
    run_table["estimator"] = ctx.meta["estimator"].to_numpy()
    ctx.add_table("runs", run_table, "Every run read, with its method, estimator and result.", "one row per run")
    has_results = np.isfinite(ctx.meta["xling_avg"].to_numpy(dtype=float)).any()
    baseline = _baseline(ctx)
    if has_results:
        try:
            table = result_table(ctx.runset, baseline=baseline)
        except ValueError as err:  # baseline not among the methods
            ctx.notes.append(f"Result table without a baseline: {err}")
            table = result_table(ctx.runset, baseline=None)
        ctx.add_table("results", table,
                      "Per model, task and method: source-language score, lowest target language, "
                      f"cross-lingual average (without the source) ± sd over seeds, and the difference to "
                      f"{baseline!r} (FUN Table 1).", "runs (seeds) per model/task/method; n_seeds")
        try:
            comparison = compare_methods(ctx.runset, metric=opts.metric, baseline=baseline,
                                         n_boot=opts.n_boot, seed=opts.seed)
        except ValueError as err:
            ctx.notes.append(f"Method comparison not computed: {err}")
        else:
            ctx.add_table("methods", comparison, f"Each method against {baseline!r}: mean cross-lingual "
                          "average over seeds, stratified bootstrap CI, difference to the baseline and "
                          "the probability of improvement.", _unit(comparison, "seeds"))
    else:
        ctx.notes.append("No run has results (results.json): result tables and result figures are skipped.")
    curves = _curves(ctx)
    if not curves.empty:
        features = _features(ctx)
        wide = features_wide(features).merge(ctx.meta[["run_id", "method", "model", "task", "estimator"]],
                                             on="run_id", how="left")
        ctx.add_table("features", wide, "Features of each run's smoothed tr(F) curve (definitions in "
                      "docs/analysis.md).", "one row per run")
        result_runs = ctx.result_runs()
        if has_results and len(result_runs) >= 3:
            by = ["model", "task"] + (["estimator"] if ctx.meta["estimator"].nunique() > 1 else [])
            try:
                grid = correlation_grid(features, _results_for_stats(ctx), ys=("xling_avg",),
                                        method=opts.correlation, n_boot=opts.n_boot, n_perm=opts.n_perm,
                                        seed=opts.seed, by=tuple(by))
            except ValueError as err:
                ctx.notes.append(f"Correlations not computed: {err}")
                return
            ctx.add_table("correlations", grid, f"{opts.correlation.capitalize()} correlation of each "
                          "curve feature with the cross-lingual average, bootstrap CI, permutation p-value, "
                          "Holm and Benjamini-Hochberg corrections.", _unit(grid, "runs"))


def _results_for_stats(ctx: _Context) -> pd.DataFrame:
    """Run-level frame the correlations read: results restricted to ``options.metric``."""
    runs = ctx.runset.runs.copy()
    runs["estimator"] = ctx.meta["estimator"].to_numpy()
    keep = set(ctx.result_runs()["run_id"])
    return runs.loc[runs["run_id"].isin(keep)]


def _unit(frame: pd.DataFrame, default: str) -> str:
    if "unit" in frame.columns and len(frame):
        units = sorted({str(u) for u in frame["unit"].dropna()})
        if units:
            return ", ".join(units)
    return default


# ------------------------------------------------------------------------------ writing
def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [_json_safe(dict(zip(frame.columns, row, strict=True)))
            for row in frame.itertuples(index=False, name=None)]


def _problems_frame(runset: Any) -> pd.DataFrame:
    problems = runset.problems
    if problems is None or len(problems) == 0:
        return pd.DataFrame(columns=["run", "file", "line", "reason", "action"])
    return problems.reset_index(drop=True)


#: Every table a report can write (stale copies from an earlier report are removed).
TABLE_NAMES = ("runs", "results", "methods", "features", "correlations", "groups", "unfreeze_positions",
               "order_agreement", "problems")


def _remove_stale(figures_dir: Path, tables_dir: Path) -> None:
    """Delete files an earlier report wrote under these names, so no stale figure survives."""
    for name in FIGURES:
        for suffix in (".pdf", ".png", ".svg"):
            path = figures_dir / (safe_filename(name) + suffix)
            if path.is_file():
                path.unlink()
    for name in TABLE_NAMES:
        path = tables_dir / (safe_filename(name) + ".csv")
        if path.is_file():
            path.unlink()


def build_report(runset_or_paths: Any, out_dir: str | os.PathLike, **options: Any) -> ReportResult:
    """Analyse runs and write ``report.html``, ``figures/``, ``tables/`` and ``summary.json``.

    ``runset_or_paths``: a ``RunSet`` (from ``fisherlab.analysis.load_runs``) or run
    directories / parents / globs. ``options``: the fields of :class:`ReportOptions`
    (``baseline``, ``metric``, ``delta``, ``window``, ``figures``, ``estimator_policy``,
    ``n_boot``, ``n_perm``, ``seed``, ...). Raises :class:`ReportError` when there is
    nothing to report on; figures without inputs are skipped with a note.
    """
    from fisherlab import __version__
    from fisherlab.plots import method_colors, save_figure

    opts = ReportOptions.from_kwargs(**options)
    runset = _load(runset_or_paths, opts)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    figures_dir, tables_dir = out / "figures", out / "tables"
    figures_dir.mkdir(parents=True, exist_ok=True)
    tables_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(figures_dir, tables_dir)

    meta = _run_meta(runset)
    ctx = _Context(runset=runset, options=opts, meta=meta, palette=method_colors(meta["method"].astype(str)))
    _compute_tables(ctx)

    drawn: dict[str, Drawn] = {}
    skipped: dict[str, str] = {}
    written: dict[str, list[Path]] = {}
    for name in opts.figures:
        try:
            result = FIGURE_BUILDERS[name](ctx)
        except SkipFigure as why:
            skipped[name] = str(why)
            continue
        except ValueError as err:  # data the figure cannot draw (e.g. mixed estimators refused)
            skipped[name] = f"not drawn: {err}"
            continue
        drawn[name] = result
        written[name] = save_figure(result.figure, figures_dir / safe_filename(name), formats=opts.formats)

    problems = _problems_frame(runset)
    ctx.add_table("problems", problems, "Everything the reader skipped or repaired, with the reason.",
                  "one row per problem")
    table_paths: dict[str, Path] = {}
    for name, frame in ctx.tables.items():
        path = tables_dir / (safe_filename(name) + ".csv")
        frame.to_csv(path, index=False, lineterminator="\n")
        table_paths[name] = path

    summary = {
        "fisherlab": __version__,
        "n_runs": int(len(runset.runs)),
        "n_problems": int(len(problems)),
        "methods": _json_safe(meta["method"].astype(str).value_counts().sort_index().to_dict()),
        "estimators": _json_safe(meta["estimator"].astype(str).value_counts().sort_index().to_dict()),
        "baseline": _baseline(ctx),
        "figures": {k: [str(p.relative_to(out)) for p in v] for k, v in written.items()},
        "skipped_figures": skipped,
        "tables": {k: str(p.relative_to(out)) for k, p in table_paths.items()},
        "options": _json_safe(opts.to_dict()),
        "notes": ctx.notes,
        "problems": _records(problems),
    }
    for name in ("methods", "correlations"):
        if name in ctx.tables:
            summary[name] = _records(ctx.tables[name])
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(_json_safe(summary), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    from fisherlab.report.page import render_page

    html_path = out / "report.html"
    html_path.write_text(render_page(ctx, drawn, written, skipped, problems, table_paths, out),
                         encoding="utf-8")
    return ReportResult(out_dir=out, html=html_path, summary_path=summary_path, summary=summary,
                        figures=written, tables=table_paths, skipped=skipped, problems=problems)


__all__ = ["build_report", "safe_filename", "FIGURES", "ReportError", "ReportOptions", "ReportResult"]
