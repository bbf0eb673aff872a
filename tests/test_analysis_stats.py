"""Correlations (bootstrap CIs, permutation p-values, corrections) and method comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fisherlab.analysis import (
    benjamini_hochberg,
    compare_methods,
    correlate,
    correlation_batch,
    correlation_grid,
    curve_features,
    holm,
    load_runs,
    trace_curves,
)
from fisherlab.analysis.synthetic import write_synthetic_store
from fisherlab.runs import RunWriter


def test_batch_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(20, 15)).astype(float)  # with ties
    y = x + rng.integers(0, 4, size=(20, 15))
    for i in range(20):
        assert correlation_batch(x[i], y[i], "spearman")[0] == pytest.approx(sps.spearmanr(x[i], y[i]).statistic)
        assert correlation_batch(x[i], y[i], "kendall")[0] == pytest.approx(sps.kendalltau(x[i], y[i]).statistic)
        assert correlation_batch(x[i], y[i], "pearson")[0] == pytest.approx(sps.pearsonr(x[i], y[i]).statistic)
    batch = correlation_batch(x, y, "kendall")
    assert np.allclose(batch, [sps.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)])
    assert np.isnan(correlation_batch(np.ones(5), np.arange(5.0))[0])
    with pytest.raises(ValueError, match="method"):
        correlation_batch(x, y, "distance")


def test_multiple_testing_corrections_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    assert np.allclose(holm(p)[:4], [0.03, 0.06, 0.06, 0.02]) and np.isnan(holm(p)[4])
    assert np.allclose(benjamini_hochberg(p)[:4], [0.02, 0.04, 0.04, 0.02])
    q = np.random.default_rng(1).uniform(size=30)
    assert np.allclose(benjamini_hochberg(q), sps.false_discovery_control(q, method="bh"))
    assert (holm(q) >= benjamini_hochberg(q) - 1e-12).all()


def _pairs(n: int, rho: float, seed: int, cells: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n * cells)
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n * cells)
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(n * cells)], "feat": x, "res": y,
                         "model": np.repeat([f"m{c}" for c in range(cells)], n), "task": "t"})


def test_null_case_ci_covers_zero():
    covered = 0
    for seed in range(40):
        frame = _pairs(20, 0.0, seed)
        out = correlate(frame, None, "feat", "res", n_boot=200, n_perm=0, seed=seed)
        covered += out["ci_low"].iloc[0] <= 0 <= out["ci_high"].iloc[0]
    assert covered >= 34  # >= 85% of 40


def test_strong_correlation_detected_per_cell():
    frame = _pairs(30, 0.9, seed=3, cells=2)
    out = correlate(frame, None, "feat", "res", n_boot=500, n_perm=500, seed=0)
    assert out["model"].tolist() == ["m0", "m1"] and (out["n"] == 30).all()
    assert (out["r"] > 0.7).all() and (out["ci_low"] > 0).all()
    assert (out["ci_low"] <= out["r"]).all() and (out["r"] <= out["ci_high"]).all()
    assert (out["p_value"] <= 2 / 501).all()
    assert (out["unit"] == "run").all()
    again = correlate(frame, None, "feat", "res", n_boot=500, n_perm=500, seed=0)
    pd.testing.assert_frame_equal(out, again)
    other = correlate(frame, None, "feat", "res", n_boot=500, n_perm=500, seed=1)
    assert not np.allclose(out["ci_low"], other["ci_low"])
    pooled = correlate(frame, None, "feat", "res", n_boot=100, n_perm=100, by=None)
    assert len(pooled) == 1 and pooled["n"].iloc[0] == 60
    tau = correlate(frame, None, "feat", "res", method="kendall", n_boot=100, n_perm=100)
    assert (tau["r"] < out["r"]).all()  # |tau| < |rho| for strong monotone association


def test_permutation_p_value_is_uniformish_under_null():
    ps = [correlate(_pairs(15, 0.0, s), None, "feat", "res", n_boot=0, n_perm=200, seed=s)["p_value"].iloc[0]
          for s in range(30)]
    assert 0.2 < np.mean(ps) < 0.8 and min(ps) > 0


def test_correlate_errors_and_missing_values():
    frame = _pairs(10, 0.5, 0)
    with pytest.raises(ValueError, match="no column"):
        correlate(frame, None, "nope", "res")
    with pytest.raises(ValueError, match="grouping column"):
        correlate(frame.drop(columns="model"), None, "feat", "res")
    frame.loc[:2, "feat"] = np.nan
    out = correlate(frame, None, "feat", "res", n_boot=50, n_perm=50)
    assert out["n"].iloc[0] == 7
    tiny = correlate(frame.iloc[3:5], None, "feat", "res")
    assert tiny["n"].iloc[0] == 2 and np.isnan(tiny["r"].iloc[0])


@pytest.fixture(scope="module")
def correlated_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("corr")
    write_synthetic_store(root, n_runs=40, methods=("permutation",), seeds=tuple(range(20)),
                          models=("m-a", "m-b"), n_steps=30, n_blocks=4, rho=0.95, seed=2)
    return load_runs(root)


def test_known_correlation_from_a_run_store(correlated_store):
    rs = correlated_store
    feats = curve_features(trace_curves(rs, window=1), value="trace")
    grid = correlation_grid(feats, rs, n_boot=300, n_perm=300)
    assert set(grid["model"]) == {"m-a", "m-b"} and (grid["n"] == 20).all()
    assert {"p_holm", "p_bh"} <= set(grid.columns)
    lp = grid[grid["x"] == "learning_period"]
    assert (lp["r"] > 0.8).all() and (lp["ci_low"] > 0.5).all() and (lp["p_holm"] < 0.05).all()
    assert (grid["p_holm"] >= grid["p_value"] - 1e-12).all()
    assert (grid["p_bh"] <= grid["p_holm"] + 1e-12).all()
    fam = correlation_grid(feats, rs, xs=["learning_period", "area"], n_boot=0, n_perm=100, family=["model"])
    for _, part in fam.groupby("model"):
        assert np.allclose(part["p_holm"], holm(part["p_value"]))


def _hand_store(root, scores):
    """scores: {(method, seed): {"en": ..., "de": ..., "sw": ...}} for one model/task."""
    for (method, seed), per_language in scores.items():
        writer = RunWriter.create(root / f"{method}-{seed}", {"method": method, "seed": seed,
                                                              "model": "mb", "task": "xnli"})
        writer.write_results("accuracy", "en", per_language)
        writer.finish()
    return load_runs(root)


def test_compare_methods_by_hand(tmp_path):
    rs = _hand_store(tmp_path, {
        ("base", 0): {"en": 80, "de": 60, "sw": 40},
        ("base", 1): {"en": 82, "de": 62, "sw": 44},
        ("gu", 0): {"en": 81, "de": 61, "sw": 45},
        ("gu", 1): {"en": 79, "de": 65, "sw": 41},
    })
    out = compare_methods(rs, baseline="base", n_boot=2000, seed=0).set_index("method")
    assert out.loc["base", "mean"] == pytest.approx(51.5)  # (50 + 53) / 2
    assert out.loc["gu", "mean"] == pytest.approx(53.0)  # (53 + 53) / 2
    assert out.loc["base", "std"] == pytest.approx(np.std([50, 53], ddof=1))
    assert out.loc["gu", "std"] == pytest.approx(0.0)
    assert (out["n_seeds"] == 2).all() and (out["n_languages"] == 2).all()
    # P(gu > base): de: gu {61, 65} vs base {60, 62}: 3 of 4; sw: gu {45, 41} vs base {40, 44}: 3 of 4
    assert out.loc["gu", "p_improve"] == pytest.approx(0.75)
    assert np.isnan(out.loc["base", "p_improve"])
    assert out.loc["gu", "diff"] == pytest.approx(1.5)
    assert out.loc["gu", "diff_ci_low"] <= 1.5 <= out.loc["gu", "diff_ci_high"]
    for method in ("base", "gu"):
        assert out.loc[method, "ci_low"] <= out.loc[method, "mean"] <= out.loc[method, "ci_high"]
    # stratified bootstrap: every draw is a mean of per-language means of observed values
    assert out.loc["gu", "ci_low"] >= (61 + 41) / 2 and out.loc["gu", "ci_high"] <= (65 + 45) / 2
    assert out["unit"].str.contains("seed").all() and out["unit"].str.contains("strata").all()
    assert (out["model"] == "mb").all()


def test_compare_methods_detects_an_effect(tmp_path):
    write_synthetic_store(tmp_path, n_runs=16, methods=("standard", "gradual"), seeds=tuple(range(8)),
                          method_effects={"gradual": 4.0}, result_scale=1.0, n_steps=10, n_blocks=2)
    out = compare_methods(load_runs(tmp_path), baseline="standard", n_boot=500).set_index("method")
    assert out.loc["gradual", "p_improve"] > 0.8
    assert out.loc["gradual", "diff_ci_low"] > 0
    assert out.loc["gradual", "n_seeds"] == 8
    none = compare_methods(load_runs(tmp_path), n_boot=100)
    assert none["p_improve"].isna().all()


def test_resample_ranks_equal_rankdata():
    from fisherlab.analysis.stats import resample_ranks

    rng = np.random.default_rng(5)
    values = rng.integers(0, 6, size=12).astype(float)  # many ties
    idx = rng.integers(0, 12, size=(50, 12))
    assert np.allclose(resample_ranks(values, idx), sps.rankdata(values[idx], axis=1))


def test_null_case_from_a_run_store(tmp_path):
    # 40 independent (model, task) cells of 12 runs each; results independent of the curves
    write_synthetic_store(tmp_path, n_runs=480, methods=("permutation",), seeds=tuple(range(12)),
                          models=tuple(f"m{i:02d}" for i in range(40)), n_steps=25, n_blocks=1,
                          rho=0.0, metrics=False, head=False, seed=9)
    rs = load_runs(tmp_path)
    feats = curve_features(trace_curves(rs, window=1), value="trace")
    out = correlate(feats, rs, "learning_period", "xling_avg", n_boot=200, n_perm=0, seed=0)
    assert len(out) == 40 and (out["n"] == 12).all() and out["r"].notna().all()
    covered = ((out["ci_low"] <= 0) & (out["ci_high"] >= 0)).mean()
    assert covered >= 0.85
