"""tr(F) curves and curve features against synthetic runs with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.signal import peak_widths

from fisherlab.analysis import (
    FEATURES,
    centred_moving_average,
    curve_features,
    features_wide,
    hill_width,
    load_runs,
    trace_curves,
)
from fisherlab.analysis.features import run_features
from fisherlab.analysis.synthetic import curve_truth, write_synthetic_store

METHODS = ("standard", "gradual", "fisher", "permutation", "reverse", "random")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    write_synthetic_store(root, n_runs=12, methods=METHODS, seeds=(0, 1), n_steps=30, n_blocks=5, seed=4)
    return load_runs(root)


def _truth(rs, column):
    return rs.runs.set_index("run_id")[f"config.synthetic.{column}"]


def test_curve_is_mean_over_trainable_layer_blocks(store):
    curves = trace_curves(store, window=1)
    assert list(curves.columns) == ["run_id", "step", "trace_sum", "n_trainable", "trace", "trace_smooth"]
    assert len(curves) == 12 * 30
    # brute force from the fisher rows
    f = store.fisher
    sel = f[f["trainable"].fillna(False).astype(bool) & f["layer"].notna()]
    expect = sel.groupby(["run_id", "step"])["trace"].agg(["sum", "size"])
    got = curves.set_index(["run_id", "step"])
    assert np.allclose(got.loc[expect.index, "trace_sum"], expect["sum"])
    assert (got.loc[expect.index, "n_trainable"] == expect["size"]).all()
    # and the synthetic hill is exactly recovered (frozen blocks and the head would spoil it)
    steps = np.arange(30) * 10.0
    for run_id, part in curves.groupby("run_id"):
        t = store.runs.set_index("run_id").loc[run_id]
        hill, _ = curve_truth("triangle", steps, 0.5, t["config.synthetic.peak_value"] - 0.5,
                              t["config.synthetic.peak_step"], t["config.synthetic.learning_period"])
        assert np.allclose(part["trace"], hill)
        assert np.array_equal(part["trace"], part["trace_smooth"])  # window 1


def test_gradual_counts_trainable_blocks(store):
    curves = trace_curves(store, window=1)
    gradual = store.runs.loc[store.runs["method"] == "gradual", "run_id"].iloc[0]
    k = store.runs.set_index("run_id").loc[gradual, "k"]
    part = curves[curves["run_id"] == gradual]
    expected = np.minimum(part["step"].to_numpy() // k + 1, 5)
    assert part["n_trainable"].tolist() == expected.tolist()


def test_head_and_normalisation_options(store):
    with_head = trace_curves(store, window=1, layers_only=False)
    layers = trace_curves(store, window=1)
    assert (with_head["n_trainable"] == layers["n_trainable"] + 1).all()
    assert np.allclose(with_head["trace_sum"], layers["trace_sum"] + 1.0)  # head trace is 1.0
    raw = trace_curves(store, window=1, normalise=False)
    assert np.allclose(raw["trace"], layers["trace_sum"])
    scaled = trace_curves(store, window=3, scale01=True)
    assert list(scaled.columns)[-1] == "trace_scaled"
    per_run = scaled.groupby("run_id")["trace_scaled"]
    assert np.allclose(per_run.min(), 0.0) and np.allclose(per_run.max(), 1.0)


def test_steps_without_trainable_layers_are_missing(tmp_path):
    write_synthetic_store(tmp_path, n_runs=1, methods=("lpft",), seeds=(0,), n_steps=20, n_blocks=3)
    rs = load_runs(tmp_path)
    curves = trace_curves(rs, window=3)
    k = rs.runs["k"].iloc[0]
    early = curves["step"] < k  # LPFT: only the head trains before the first unfreezing
    assert early.any() and (curves.loc[early, "n_trainable"] == 0).all()
    assert curves.loc[early, "trace"].isna().all() and curves.loc[~early, "trace"].notna().all()
    assert curves["trace_smooth"].iloc[int(early.sum()) - 1] == pytest.approx(
        curves.loc[~early, "trace"].iloc[0])  # NaNs are skipped by the moving average
    with_head = trace_curves(rs, window=1, layers_only=False)
    assert with_head.loc[early, "trace"].eq(1.0).all()


def test_schedule_fallback_when_flags_are_missing(tmp_path):
    paths = write_synthetic_store(tmp_path, n_runs=3, methods=("gradual", "reverse", "lpft"), seeds=(0,),
                                  n_steps=20, n_blocks=4)
    with_flags = trace_curves(load_runs(tmp_path), window=1)
    for path in paths:
        lines = (path / "fisher.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        for row in rows:
            del row["trainable"]
        (path / "fisher.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rs = load_runs(tmp_path)
    assert rs.fisher["trainable"].isna().all()
    from_schedule = trace_curves(rs, window=1)
    pd.testing.assert_frame_equal(with_flags, from_schedule)


def test_centred_moving_average_by_hand():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0])
    groups = np.array([0, 0, 0, 0, 0, 1, 1])
    assert np.allclose(centred_moving_average(values, groups, 3), [1.5, 2, 3, 4, 4.5, 15, 15])
    assert np.allclose(centred_moving_average(values, groups, 5), [2, 2.5, 3, 3.5, 4, 15, 15])
    # even window: one more point after than before
    assert np.allclose(centred_moving_average(values[:5], groups[:5], 2), [1.5, 2.5, 3.5, 4.5, 5])
    with_nan = np.array([1.0, np.nan, 3.0])
    assert np.allclose(centred_moving_average(with_nan, np.zeros(3), 3), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        centred_moving_average(values, groups, 0)
    # agrees with pandas' centred rolling mean for odd windows
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    expect = pd.Series(x).rolling(7, center=True, min_periods=1).mean().to_numpy()
    assert np.allclose(centred_moving_average(x, np.zeros(50), 7), expect)


def test_features_exact_on_triangles(store):
    feats = features_wide(curve_features(trace_curves(store, window=1), value="trace"))
    feats = feats.set_index("run_id")
    for name in ("peak_value", "peak_step", "learning_period", "area"):
        assert np.allclose(feats[name], _truth(store, name).loc[feats.index]), name
    assert list(curve_features(trace_curves(store, window=1))["feature"][:6]) == list(FEATURES)


def test_feature_definitions_by_hand():
    steps = np.arange(0, 110, 10, dtype=float)  # 0..100
    values = np.array([1, 1, 2, 4, 6, 4, 2, 1, 1, 1, 3], dtype=float)
    f = run_features(steps, values, early_fraction=0.3)
    assert f["peak_value"] == 6 and f["peak_step"] == 40
    # prominence 6 - max(1, 1) = 5 -> half height 3.5; crossings at 27.5 and 52.5
    assert f["learning_period"] == pytest.approx(25.0)
    assert f["area"] == pytest.approx(np.sum(np.diff(steps) * (values[1:] + values[:-1]) / 2))
    assert f["early_mean"] == pytest.approx(np.mean([1, 1, 2, 4]))  # steps <= 30
    assert f["post_peak_decay"] == pytest.approx((6 - 3) / 6)


def test_hill_width_matches_scipy_for_interior_peaks():
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = np.cumsum(rng.normal(size=40))
        steps = np.arange(40) * 5.0
        peak = int(np.argmax(x[1:-1])) + 1
        width, prominence, left, right = hill_width(x, steps, peak)
        if prominence == 0:
            continue
        expect = peak_widths(x, [peak], rel_height=0.5)[0][0] * 5.0
        assert width == pytest.approx(expect)
        assert left <= steps[peak] <= right


def test_edge_peaks_and_flat_curves():
    steps = np.arange(6) * 10.0
    decreasing = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    width, prominence, left, right = hill_width(decreasing, steps, 0)
    assert prominence == 5.0 and left == 0.0 and right == pytest.approx(25.0)
    assert width == pytest.approx(25.0)
    increasing = decreasing[::-1]
    assert hill_width(increasing, steps, 5)[0] == pytest.approx(25.0)
    flat = run_features(steps, np.ones(6))
    assert np.isnan(flat["learning_period"]) and flat["post_peak_decay"] == 0.0
    assert np.isnan(run_features(steps, np.full(6, np.nan))["peak_value"])


def test_gaussian_width_close_to_fwhm(tmp_path):
    write_synthetic_store(tmp_path, n_runs=6, seeds=(0,), methods=("gradual",), n_steps=80, n_blocks=3,
                          shape="gaussian", center_range=(0.45, 0.55), width_range=(0.1, 0.2))
    rs = load_runs(tmp_path)
    feats = features_wide(curve_features(trace_curves(rs, window=1), value="trace")).set_index("run_id")
    truth = _truth(rs, "learning_period").loc[feats.index]
    assert np.allclose(feats["learning_period"], truth, atol=10.0)  # one probe interval
    smoothed = features_wide(curve_features(trace_curves(rs, window=5))).set_index("run_id")
    assert (smoothed["peak_value"] <= feats["peak_value"] + 1e-12).all()  # smoothing lowers the peak


def test_curve_features_validates_input():
    with pytest.raises(ValueError, match="lacks"):
        curve_features(pd.DataFrame({"run_id": ["a"], "step": [0]}))
    with pytest.raises(ValueError, match="early_fraction"):
        curve_features(pd.DataFrame({"run_id": ["a"], "step": [0], "trace_smooth": [1.0]}), early_fraction=2)
