"""The report's target-language figures and tables (``--probe_languages`` runs).

Three figures -- ``language_trace`` (one panel per language), ``language_relation``
(across runs, per language: a language's tr(F) feature vs its zero-shot result) and
``language_ranking`` (within runs: languages ranked by tr(F) vs by result) -- and their
CSV tables (``language_features``, ``language_relation``, ``language_ranking``,
``language_ranking_summary``). Every builder raises :class:`SkipFigure` when the store
has no target-language rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fisherlab.report.context import Drawn, SkipFigure, _Context

if TYPE_CHECKING:
    import pandas as pd

#: The curve feature the relations use (one of ``fisherlab.analysis.FEATURES``).
LANGUAGE_FEATURE = "peak_value"


def _language_tables(ctx: _Context) -> None:
    """Compute the language tables once per report (SkipFigure without target-language rows)."""
    from fisherlab.analysis.languages import (
        has_target_fisher,
        language_features,
        language_ranking,
        language_relation,
        ranking_summary,
    )

    if not has_target_fisher(ctx.runset):
        raise SkipFigure("no run has tr(F) measured on target-language inputs (fisher.jsonl rows with "
                         "'language'; train with --probe_languages)")
    if "language_features" in ctx.tables:
        return
    o = ctx.options
    features = language_features(ctx.runset, window=o.window, early_fraction=o.early_fraction)
    ctx.add_table("language_features", features, "tr(F)-curve features per run and target language "
                  "(curve: mean tr(F) over the trainable layer blocks on that language's unlabelled inputs).",
                  "one row per run, language and feature")
    ctx.add_table("language_relation", language_relation(
        ctx.runset, LANGUAGE_FEATURE, method=o.correlation, n_boot=o.n_boot, n_perm=o.n_perm, seed=o.seed,
        features=features, metric=o.metric),
        f"Across runs, per target language: {o.correlation} correlation of the language's tr(F) "
        f"{LANGUAGE_FEATURE} with its zero-shot result; bootstrap CI over runs, permutation p, Holm/BH "
        "over languages.", "runs (one observation per run)")
    per_run = language_ranking(ctx.runset, LANGUAGE_FEATURE, method=o.correlation, features=features,
                               metric=o.metric)
    ctx.add_table("language_ranking", per_run.merge(ctx.meta[["run_id", "method"]].rename(
        columns={"method": "run_method"}), on="run_id", how="left"),
        f"Within each run: {o.correlation} correlation between the ranking of its target languages by "
        f"tr(F) {LANGUAGE_FEATURE} and by zero-shot result.", "one row per run")
    ctx.add_table("language_ranking_summary", ranking_summary(
        ctx.runset, LANGUAGE_FEATURE, n_boot=o.n_boot, n_perm=o.n_perm, seed=o.seed, features=features,
        metric=o.metric), "The within-run ranking correlations over runs: mean with a bootstrap CI over "
        "runs and a permutation p (results shuffled among a run's languages).", "runs")


def _language_table(ctx: _Context, name: str) -> pd.DataFrame:
    """The language table ``name``, computing the language tables first
    (SkipFigure without target-language rows)."""
    _language_tables(ctx)
    return ctx.tables[name]


def _fig_language_trace(ctx: _Context) -> Drawn:
    from fisherlab.analysis.languages import language_curves
    from fisherlab.plots import plot_trace_curves

    _language_tables(ctx)
    curves = language_curves(ctx.runset, window=ctx.options.window)
    fig = plot_trace_curves(curves, ctx.meta, value="trace_smooth", panel=("language",),
                            estimator_policy=ctx.options.estimator_policy, palette=ctx.palette,
                            seed=ctx.options.seed)
    return Drawn(fig, "Mean tr(F) per trainable layer block measured on each target language's unlabelled "
                      f"inputs (one panel per language), centred moving average over {ctx.options.window} "
                      "probe points; one line per method, band ±1 sd over runs (n ≥ 3).",
                 "runs (seeds) of a method at each probe step")


def _fig_language_relation(ctx: _Context) -> Drawn:
    from fisherlab.analysis.languages import language_results
    from fisherlab.plots import plot_feature_vs_result

    feats = _language_table(ctx, "language_features")
    points = feats.loc[feats["feature"] == LANGUAGE_FEATURE].merge(
        language_results(ctx.runset, ctx.options.metric), on=["run_id", "language"]).merge(
        ctx.meta[["run_id", "method"]], on="run_id")
    points = points.loc[np.isfinite(points["value"].to_numpy(dtype=float))]
    if points.empty:
        raise SkipFigure("no run has both target-language tr(F) curves and per-language results")
    fig = plot_feature_vs_result(points, x="value", y="result", hue="method", panel=("language",),
                                 stats=ctx.tables["language_relation"], method=ctx.options.correlation,
                                 palette=ctx.palette, n_boot=min(ctx.options.n_boot, 1000), seed=ctx.options.seed,
                                 xlabel=f"tr(F) {LANGUAGE_FEATURE} on the language's inputs",
                                 ylabel="zero-shot result")
    return Drawn(fig, f"Per target language (one panel each): the tr(F) {LANGUAGE_FEATURE} measured on "
                      "that language's unlabelled inputs against the run's zero-shot result in that "
                      f"language; least-squares line with a 95% bootstrap band; {ctx.options.correlation} r "
                      "with a bootstrap CI over runs and a permutation p (Holm over languages) in each title.",
                 "runs (one point per run)")


def _fig_language_ranking(ctx: _Context) -> Drawn:
    from fisherlab.plots.languages import plot_language_ranking

    per_run = _language_table(ctx, "language_ranking")
    if not np.isfinite(per_run["r"].to_numpy(dtype=float)).any():
        raise SkipFigure("no run has 3 or more target languages with tr(F) curves and results")
    fig = plot_language_ranking(per_run, ctx.tables["language_ranking_summary"], hue="run_method",
                                hue_title="method", palette=ctx.palette)
    return Drawn(fig, "Per run: correlation between the ranking of its target languages by tr(F) "
                      f"{LANGUAGE_FEATURE} (on each language's inputs) and by zero-shot result; the black "
                      "line is the mean over runs with its bootstrap CI (grey band), the dotted line 0.",
                 "runs (one point per run)")


LANGUAGE_FIGURES = {
    "language_trace": ("target-language tr(F) curves, one panel per language", _fig_language_trace),
    "language_relation": ("per language: target-language tr(F) feature vs that language's zero-shot result",
                          _fig_language_relation),
    "language_ranking": ("per run: languages ranked by target-language tr(F) vs by result",
                         _fig_language_ranking),
}
