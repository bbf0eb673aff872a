"""Target-language tr(F) analysis on synthetic stores with a planted (or no) per-language relation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fisherlab.analysis import curve_features, load_runs
from fisherlab.analysis.languages import (
    has_target_fisher,
    language_curves,
    language_features,
    language_ranking,
    language_relation,
    ranking_summary,
)
from fisherlab.analysis.synthetic import write_synthetic_store

TARGETS = ["de", "es", "sw", "th"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    write_synthetic_store(root, n_runs=36, language_rho=0.95, seed=5)
    return load_runs(root)


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    root = tmp_path_factory.mktemp("null")
    write_synthetic_store(root, n_runs=36, language_rho=0.0, seed=6)
    return load_runs(root)


def test_per_language_curves_match_the_planted_truth(planted):
    """Unsmoothed per-language curve = the written hill; its peak = the stored truth."""
    curves = language_curves(planted, window=1)
    assert sorted(curves["language"].unique()) == TARGETS
    feats = language_features(planted, value="trace", window=1)
    truth = planted.runs.set_index("run_id")
    for language in TARGETS:
        got = feats.loc[(feats["language"] == language) & (feats["feature"] == "peak_value")].set_index("run_id")
        want = truth[f"config.synthetic.languages.{language}.peak_value"]
        assert np.allclose(got["value"].to_numpy(), want.loc[got.index].to_numpy(), rtol=1e-9)
    # same features as curve_features on the language's curve (no copy of the definitions)
    sw = language_curves(planted).query("language == 'sw'")
    direct = curve_features(sw, value="trace_smooth")
    mine = language_features(planted).query("language == 'sw'").drop(columns="language")
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), direct.reset_index(drop=True), check_dtype=False)
    # the source curves are untouched by the target rows
    assert "language" not in planted.fisher.columns and has_target_fisher(planted)


def test_relation_across_runs_recovers_the_planted_relation(planted):
    table = language_relation(planted, "peak_value", n_boot=1000, n_perm=1000)
    assert list(table["language"]) == TARGETS and (table["n"] == 36).all()
    assert (table["ci_low"] > 0).all() and (table["p_value"] < 0.01).all()
    # r is Spearman's rho of the paired values (independent oracle: scipy)
    feats = language_features(planted)
    res = planted.results.loc[~planted.results["is_source"]]
    for language, row in table.set_index("language").iterrows():
        f = feats.query("language == @language and feature == 'peak_value'").set_index("run_id")["value"]
        y = res.loc[res["language"] == language].set_index("run_id")["value"].loc[f.index]
        assert row["r"] == pytest.approx(sps.spearmanr(f.to_numpy(), y.to_numpy()).statistic, abs=1e-12)


def test_ranking_within_runs_recovers_the_planted_relation(planted):
    per_run = language_ranking(planted, "peak_value", method="kendall")
    assert len(per_run) == 36 and (per_run["n_languages"] == 4).all()
    one = per_run.iloc[0]
    feats = language_features(planted).query("feature == 'peak_value' and run_id == @one.run_id")
    res = planted.results.query("run_id == @one.run_id and not is_source").set_index("language")["value"]
    x = feats.set_index("language")["value"]
    assert one["r"] == pytest.approx(sps.kendalltau(x.to_numpy(), res.loc[x.index].to_numpy()).statistic, abs=1e-12)
    summary = ranking_summary(planted, "peak_value", n_boot=1000, n_perm=1000)
    assert set(summary["method"]) == {"spearman", "kendall"}
    assert (summary["ci_low"] > 0).all() and (summary["p_value"] < 0.01).all()


def test_no_relation_where_none_was_planted(null):
    table = language_relation(null, "peak_value", n_boot=1000, n_perm=1000)
    assert ((table["ci_low"] <= 0) & (table["ci_high"] >= 0)).sum() >= 3  # 95% CIs: most cover 0
    assert (table["p_holm"] > 0.05).all()
    summary = ranking_summary(null, "peak_value", n_boot=1000, n_perm=1000)
    assert ((summary["ci_low"] <= 0) & (summary["ci_high"] >= 0)).all()
    assert (summary["p_value"] > 0.05).all()


def test_store_without_target_rows_gives_empty_frames(tmp_path):
    write_synthetic_store(tmp_path, n_runs=3)
    rs = load_runs(tmp_path)
    assert not has_target_fisher(rs)
    assert language_curves(rs).empty and language_features(rs).empty
    assert language_relation(rs).empty and language_ranking(rs).empty
    with pytest.raises(ValueError, match="feature must be one of"):
        language_relation(rs, "nonsense")


def test_report_draws_language_figures_and_skips_without_target_rows(planted, tmp_path):
    from fisherlab.report import build_report

    names = ("language_trace", "language_relation", "language_ranking")
    result = build_report(planted, tmp_path / "with", figures=names, formats=("png",), n_boot=200, n_perm=200)
    assert set(result.figures) == set(names) and not result.skipped
    for table in ("language_features", "language_relation", "language_ranking", "language_ranking_summary"):
        assert result.tables[table].is_file()
    relation = pd.read_csv(result.tables["language_relation"])
    assert sorted(relation["language"]) == TARGETS
    write_synthetic_store(tmp_path / "plain", n_runs=3)
    bare = build_report(load_runs(tmp_path / "plain"), tmp_path / "without", figures=names, formats=("png",))
    assert set(bare.skipped) == set(names) and not bare.figures
    assert all("target-language" in why for why in bare.skipped.values())
