"""The report's figures: one builder per name of :data:`fisherlab.report.options.FIGURES`.

Each builder draws from the context's tidy frames with a ``fisherlab.plots`` function and
returns a :class:`Drawn` (figure, caption, unit), or raises :class:`SkipFigure` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from fisherlab.report.context import (
    Drawn,
    SkipFigure,
    _Context,
    _curves,
    _features,
    _final_trace,
    _pick_column,
    final_trace_scope_text,
)
from fisherlab.report.languages import LANGUAGE_FIGURES
from fisherlab.report.options import (
    FPEN_COLUMN,
    REGULARISER_COLUMNS,
    WEIGHT_COLUMNS,
)
from fisherlab.report.tables import _baseline


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
    from fisherlab.analysis.figure4 import figure4_values

    values, picked = figure4_values(with_result)  # the permutation study; QA: mean of MLQA and XQuAD
    notes.extend(picked)
    for column in ("model", "task", "estimator"):
        values[column] = values[column].astype(object).where(values[column].notna(), "(unknown)").astype(str)
    groups = group_runs(values, delta=ctx.options.delta, by=["model", "task", "estimator"])
    ctx.add_table("groups", groups, f"Groups of runs within {ctx.options.delta:g} point(s) of the best "
                  "ungrouped run (FUN footnote 10), per model, task and estimator; the permutation "
                  "and top-down runs (Figure 4), QA valued by the mean of MLQA and XQuAD.",
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


_SCOPE_NOTE = ("fully fine-tuned runs: every block summed, embeddings, layers, pooler and head; "
               "adapter runs: the trainable layer blocks, head excluded")


def _fig_regulariser(ctx: _Context) -> Drawn:
    from fisherlab.plots import plot_trace_vs_accuracy

    runs = ctx.runset.runs
    kind_col = _pick_column(runs.columns, ctx.options.regulariser_column, REGULARISER_COLUMNS, "regulariser")
    if kind_col is None:
        raise SkipFigure(f"no regulariser runs (no run column {list(REGULARISER_COLUMNS)}; "
                         "name one with regulariser_column)")
    weight_col = _pick_column(runs.columns, ctx.options.weight_column, WEIGHT_COLUMNS, "weight")
    cols = ["run_id", kind_col] + ([weight_col] if weight_col else [])
    data = runs[cols].rename(columns={kind_col: "regulariser", **({weight_col: "weight"} if weight_col else {})})
    fpen_labels = bool(weight_col) and ctx.options.weight_column is None and FPEN_COLUMN in runs.columns
    if fpen_labels:  # Fisher penalty points carry the note's weight (fpen), whatever fisherlab's alpha was
        fpen = pd.to_numeric(runs[FPEN_COLUMN], errors="coerce").to_numpy(dtype=float)
        data["weight"] = np.where(np.isfinite(fpen), fpen, pd.to_numeric(data["weight"], errors="coerce"))
    data["regulariser"] = data["regulariser"].astype(object).where(data["regulariser"].notna(), "none").astype(str)
    if set(data["regulariser"]) <= {"none"}:  # train.py writes kind "none" for unregularised runs
        raise SkipFigure(f"no regulariser runs (every run has {kind_col} = 'none')")
    data = data.merge(_final_trace(ctx), on="run_id").merge(
        ctx.meta[["run_id", "model", "task", "estimator", "source_score"]], on="run_id")
    data = data.loc[np.isfinite(data["source_score"].to_numpy(dtype=float))]
    if data.empty:
        raise SkipFigure("no regulariser run has both a final tr(F) and a source-language result")
    stats = _point_stats(ctx, data, "final_trace", "source_score")
    scope = final_trace_scope_text(data["trace_scope"])
    fig = plot_trace_vs_accuracy(data, x="final_trace", y="source_score", regulariser="regulariser",
                                 weight="weight" if weight_col else None, stats=stats,
                                 estimator_policy=ctx.options.estimator_policy,
                                 n_boot=min(ctx.options.n_boot, 1000), seed=ctx.options.seed,
                                 palette=ctx.palette, method=ctx.options.correlation,
                                 xlabel=f"final tr(F), {scope}")
    label = f"weight ({weight_col or 'not found'}" + ("; Fisher penalty: fpen, the note's scale)" if fpen_labels
                                                       else ")")
    return Drawn(fig, f"tr(F) at each run's last probe step ({scope}; {_SCOPE_NOTE}) against the source-language "
                      "result; "
                      f"marker and colour = regulariser ({kind_col}), label = {label}; least-squares line with a 95% bootstrap band; "
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
    scope = final_trace_scope_text(data["trace_scope"])
    fig = plot_two_stage_gain(data, x="final_trace", y="gain", hue="language",
                              estimator_policy=ctx.options.estimator_policy,
                              n_boot=min(ctx.options.n_boot, 1000), seed=ctx.options.seed,
                              method=ctx.options.correlation, xlabel=f"tr(F) after the source stage, {scope}")
    return Drawn(fig, f"Gain on the target language from the second (target-language) stage (metrics "
                      f"rows with split {split!r}, last step) against tr(F) at the last probe of the run "
                      f"({scope}; {_SCOPE_NOTE}). The {ctx.options.correlation} r and p in the title treat "
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
    **{name: builder for name, (_, builder) in LANGUAGE_FIGURES.items()},
}

