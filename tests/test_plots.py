"""Figures: each renders from hand-made tidy frames, embeds Type 42 fonts, saves reproducibly."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fisherlab import plots
from fisherlab.plots import (
    MixedEstimatorError,
    method_color,
    method_colors,
    plot_feature_vs_result,
    plot_relative_performance,
    plot_trace_curves,
    plot_trace_validation,
    plot_trace_vs_accuracy,
    plot_two_stage_gain,
    plot_unfreezing_order,
    save_figure,
)

METHODS = ("standard", "gradual", "fisher")


def make_runs(estimators=("per_example",)) -> pd.DataFrame:
    rows = []
    for m_i, method in enumerate(METHODS):
        for seed in range(3):
            est = estimators[seed % len(estimators)]
            rows.append({"run_id": f"{method}-{seed}", "method": method, "seed": seed,
                         "model": "tiny-bert", "task": "xnli", "estimator": est,
                         "xling_avg": 50.0 + 3 * m_i + seed, "source_language": "en"})
    return pd.DataFrame(rows)


def make_curves(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for i, run in enumerate(runs.itertuples()):
        for step in range(0, 220, 20):
            hill = (1.0 + i % 3) * np.exp(-((step - 60 - 10 * (i % 4)) / 50.0) ** 2) + 0.1
            rows.append({"run_id": run.run_id, "step": step, "trace_sum": hill * 4,
                         "n_trainable": 4, "trace": hill, "trace_smooth": hill})
    curves = pd.DataFrame(rows)
    lo = curves.groupby("run_id")["trace_smooth"].transform("min")
    hi = curves.groupby("run_id")["trace_smooth"].transform("max")
    curves["trace_scaled"] = (curves["trace_smooth"] - lo) / (hi - lo)
    return curves


def make_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for i, run in enumerate(runs.itertuples()):
        for step in range(0, 220, 40):
            for lang in ("en", "de"):
                rows.append({"run_id": run.run_id, "step": step, "split": "validation",
                             "language": lang, "metric": "accuracy",
                             "value": 40 + step / 10 + i % 3})
    return pd.DataFrame(rows)


def make_groups(runs: pd.DataFrame) -> pd.DataFrame:
    groups = runs[["run_id", "xling_avg", "model", "task", "estimator"]].rename(
        columns={"xling_avg": "value"})
    groups["group"] = [1 + int(v >= 54) for v in groups["value"]]
    groups["leader"] = groups.groupby("group")["run_id"].transform("first")
    return groups


def make_positions() -> pd.DataFrame:
    rows = []
    for method, noise in (("gradual", 0.0), ("fisher", 0.4)):
        for layer in range(6):
            rows.append({"method": method, "layer": layer, "mean_position": 5 - layer + noise * (layer % 2),
                         "std": noise, "n": 3, "model": "tiny-bert", "task": "xnli"})
    rows.append({"method": "fisher", "layer": np.nan, "mean_position": 0.0, "std": 0.0, "n": 3,
                 "model": "tiny-bert", "task": "xnli"})  # the head: not drawn
    return pd.DataFrame(rows)


def make_table() -> pd.DataFrame:
    rows = []
    for model in ("tiny-bert", "tiny-xlmr"):
        for task in ("xnli", "xcopa"):
            for j, method in enumerate(METHODS):
                rows.append({"model": model, "task": task, "method": method,
                             "rel_to_baseline": -2.0 + j, "xling_std": 0.5})
    return pd.DataFrame(rows)


def make_feature_points(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for i, run in enumerate(runs.itertuples()):
        for feature in ("peak_value", "learning_period"):
            rows.append({"run_id": run.run_id, "feature": feature, "value": i + (feature == "peak_value"),
                         "result": run.xling_avg, "method": run.method, "model": run.model,
                         "task": run.task, "estimator": run.estimator})
    return pd.DataFrame(rows)


def make_regulariser_points() -> pd.DataFrame:
    rows = []
    for kind in ("consistency", "penalty", "l2"):
        for weight in (0.1, 1.0, 10.0):
            rows.append({"run_id": f"{kind}-{weight}", "regulariser": kind, "weight": weight,
                         "final_trace": 100.0 / (1 + weight), "source_result": 70 + np.log1p(weight),
                         "model": "tiny-bert", "task": "xnli", "estimator": "per_example"})
    return pd.DataFrame(rows)


def make_gain_points() -> pd.DataFrame:
    rows = []
    for i in range(6):
        for lang in ("de", "es", "zh"):
            rows.append({"run_id": f"r{i}", "language": lang, "trace": 1.0 + i,
                         "gain": 3.0 - 0.3 * i + (lang == "zh"), "model": "tiny-bert",
                         "task": "pawsx", "estimator": "per_example"})
    return pd.DataFrame(rows)


def figure_builders():
    runs = make_runs()
    curves = make_curves(runs)
    return {
        "trace": lambda: plot_trace_curves(curves, runs),
        "trace_validation": lambda: plot_trace_validation(curves, make_metrics(runs), make_groups(runs)),
        "order": lambda: plot_unfreezing_order(make_positions()),
        "relative": lambda: plot_relative_performance(make_table(), error="xling_std"),
        "feature": lambda: plot_feature_vs_result(make_feature_points(runs), n_boot=50),
        "regulariser": lambda: plot_trace_vs_accuracy(make_regulariser_points(), n_boot=50),
        "two_stage": lambda: plot_two_stage_gain(make_gain_points(), n_boot=50),
    }


BUILDERS = figure_builders()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_figure_renders_with_type42_fonts(name, tmp_path):
    fig = BUILDERS[name]()
    assert isinstance(fig, Figure)
    assert any(ax.has_data() for ax in fig.axes)
    paths = save_figure(fig, tmp_path / name)
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    pdf = paths[0].read_bytes()
    assert pdf.startswith(b"%PDF")
    assert b"/Subtype /Type3" not in pdf
    assert b"/FontFile2" in pdf or b"/TrueType" in pdf
    assert b"/CreationDate" not in pdf
    assert paths[1].read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["trace", "feature", "order"])
def test_same_input_gives_byte_identical_files(name, tmp_path):
    first = save_figure(BUILDERS[name](), tmp_path / "a")
    second = save_figure(BUILDERS[name](), tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.suffix


def test_global_rcparams_untouched(tmp_path):
    before = dict(mpl.rcParams)
    save_figure(BUILDERS["trace"](), tmp_path / "trace")
    assert dict(mpl.rcParams) == before
    assert mpl.rcParams["pdf.fonttype"] == before["pdf.fonttype"]


def test_method_colors_stable_and_distinct():
    small = method_colors(["fisher", "standard"])
    large = method_colors(["fisher", "standard", "gradual", "lpft", "random", "my_method"])
    assert small["fisher"] == large["fisher"] == method_color("fisher")
    assert small["standard"] == large["standard"]
    assert len(set(large.values())) == len(large)  # one colour per method
    # two different methods preferring one slot still get different colours
    clash = method_colors(["lpft", "consistency", "surgical"])
    assert len(set(clash.values())) == 3
    # synonyms share the colour
    assert method_colors(["gu"])["gu"] == method_color("gradual")


def test_palette_is_used_for_lines():
    runs = make_runs()
    fig = plot_trace_curves(make_curves(runs), runs, errorbar=None)
    want = {mpl.colors.to_hex(c) for c in method_colors(METHODS).values()}
    got = {mpl.colors.to_hex(line.get_color()) for line in fig.axes[0].get_lines()}
    assert want <= got


def test_mixed_estimators_are_faceted_or_refused():
    runs = make_runs(estimators=("per_example", "exact"))
    curves = make_curves(runs)
    fig = plot_trace_curves(curves, runs)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(titles) == 2 and all("estimator:" in t for t in titles)
    with pytest.raises(MixedEstimatorError, match="different estimators"):
        plot_trace_curves(curves, runs, estimator_policy="refuse")
    points = make_feature_points(runs)
    with pytest.raises(MixedEstimatorError):
        plot_feature_vs_result(points, panel=("feature",), estimator_policy="refuse", n_boot=20)
    fig = plot_feature_vs_result(points, panel=("feature",), n_boot=20)  # facet adds estimator
    assert sum(ax.get_visible() for ax in fig.axes) == 4


def test_single_ax_and_multi_panel_error():
    runs = make_runs()
    fig = Figure()
    ax = fig.subplots()
    assert plot_trace_curves(make_curves(runs), runs, ax=ax) is fig
    assert ax.get_legend() is not None and not fig.legends  # the caller's axes hold the legend
    with pytest.raises(ValueError, match="panels but one ax"):
        plot_relative_performance(make_table(), ax=ax)


def test_non_finite_values_and_odd_names_are_drawn_safely(tmp_path):
    runs = make_runs()
    runs.loc[0, "method"] = "$weird_method<script>"
    curves = make_curves(runs)
    curves.loc[::7, "trace_smooth"] = np.inf
    curves.loc[::5, "trace_smooth"] = np.nan
    fig = plot_trace_curves(curves, runs)
    save_figure(fig, tmp_path / "odd")
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_ydata())]
    assert all(np.isfinite(np.asarray(ln.get_ydata(), float)).all() for ln in lines)


def test_missing_column_is_a_clear_error():
    runs = make_runs()
    with pytest.raises(ValueError, match="trace_scaled"):
        plot_trace_validation(make_curves(runs).drop(columns="trace_scaled"), make_metrics(runs),
                              make_groups(runs))
    with pytest.raises(ValueError, match="several metrics"):
        metrics = make_metrics(runs)
        extra = metrics.assign(metric="f1")
        plot_trace_validation(make_curves(runs), pd.concat([metrics, extra]), make_groups(runs))


def test_stats_row_goes_into_the_title():
    runs = make_runs()
    stats = pd.DataFrame({"feature": ["peak_value", "learning_period"], "r": [0.61, -0.2],
                          "ci_low": [0.1, -0.7], "ci_high": [0.9, 0.4], "p_value": [0.02, 0.5],
                          "n": [9, 9], "unit": ["runs", "runs"]})
    fig = plot_feature_vs_result(make_feature_points(runs), stats=stats, n_boot=20)
    titles = " | ".join(ax.get_title() for ax in fig.axes)
    assert "r = 0.61 [0.10, 0.90]" in titles and "n = 9 runs" in titles


def test_unfreezing_order_draws_the_diagonal():
    fig = plot_unfreezing_order(make_positions())
    diag = fig.axes[0].get_lines()[0]
    assert list(diag.get_xdata()) == list(range(6))
    assert list(diag.get_ydata()) == [5, 4, 3, 2, 1, 0]


def test_public_api_exported():
    for name in plots.__all__:
        assert hasattr(plots, name)


def test_single_panel_title_goes_to_the_figure_and_wraps():
    """A single panel's long title used to be an axes title: clipped and overlapping the legend."""
    runs = make_runs()
    fig = plot_trace_curves(make_curves(runs), runs)  # one panel: tiny-bert · xnli · estimator
    assert fig.axes[0].get_title() == ""
    title = fig.get_suptitle()
    assert "tiny-bert" in title and "estimator: per_example" in title
    assert all(len(line) <= int((fig.get_figwidth() - 1.6) * 9.5) for line in title.splitlines())
    ax = Figure().subplots()  # the caller's axes keep the title
    plot_trace_curves(make_curves(runs), runs, ax=ax)
    assert "tiny-bert" in ax.get_title()
    from fisherlab.plots._facets import wrap_title

    assert wrap_title("aaaa · bb · cccccc", 9) == "aaaa · bb\ncccccc"
    assert wrap_title("a-very-long-part · b", 5) == "a-very-long-part\nb"


def test_constant_result_gets_no_fit_and_no_offset_ticks():
    """All runs with the same result: no regression band of rounding noise, readable ticks."""
    points = make_feature_points(make_runs()).assign(result=37.5)
    fig = plot_feature_vs_result(points, n_boot=20)
    for axis in fig.axes:
        if axis.get_visible():
            assert len(axis.get_lines()) == 0  # no fitted line
            low, high = axis.get_ylim()
            assert high - low > 0.1
            assert axis.yaxis.get_major_formatter().get_useOffset() is False
