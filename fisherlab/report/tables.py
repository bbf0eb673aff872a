"""The report's tables: runs, results (FUN Table 1), method comparison, curve features, correlations."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fisherlab.report.context import RUN_TABLE_COLUMNS, _Context, _curves, _features


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

