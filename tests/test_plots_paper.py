"""Figures a reviewer would not question: each test inspects the drawn Axes for one fix.

Rich display in Jupyter, n and the band rule, constant features, Figure-4 group titles and
shared axes, the validated languages, the relative plot's unit and n; and a report built on
a synthetic store with two seeds per method (the case that used to draw bands from n=2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from test_plots import (
    BUILDERS,
    make_curves,
    make_feature_points,
    make_groups,
    make_metrics,
    make_positions,
    make_runs,
    make_table,
)

from fisherlab.plots import (
    MIN_BAND_N,
    PaperFigure,
    plot_feature_vs_result,
    plot_relative_performance,
    plot_trace_curves,
    plot_trace_validation,
    plot_unfreezing_order,
)
from fisherlab.plots.figure import png_size


def _visible(fig):
    return [a for a in fig.axes if a.get_visible()]


def _legend_texts(fig):
    legend = fig.legends[0]
    return legend.get_title().get_text(), [t.get_text() for t in legend.get_texts()]


def _bands(axis) -> int:
    return sum(isinstance(c, PolyCollection) for c in axis.collections)


# ------------------------------------------------------------------------------ Jupyter display
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_figure_has_a_png_rich_display(name):
    """IPython shows the figure as an image, not as ``<Figure size 500x270 with 1 Axes>``."""
    from IPython.core.formatters import DisplayFormatter

    fig = BUILDERS[name]()
    assert isinstance(fig, PaperFigure)
    data, metadata = DisplayFormatter().format(fig)
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    width, height = png_size(data["image/png"])
    shown = metadata["image/png"]
    assert shown["width"] == round(width * 100 / 150) and shown["height"] == round(height * 100 / 150)


def test_png_size_rejects_other_bytes():
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(b"GIF89a" + b"\0" * 30)


# ------------------------------------------------------------------------------ bands and n
def test_no_band_from_two_runs_and_the_legend_says_so():
    runs = make_runs()
    two = runs.loc[runs["seed"] < 2]  # two seeds per method
    fig = plot_trace_curves(make_curves(two), two)
    axis = _visible(fig)[0]
    assert _bands(axis) == 0  # no ±1 sd band from n=2
    thin = [ln for ln in axis.get_lines() if ln.get_linewidth() < 1]
    assert len(thin) == len(two)  # every run drawn on its own
    title, labels = _legend_texts(fig)
    assert "n < 3" in title and "no band" in title
    assert labels == [f"{m} (n=2)" for m in sorted(two["method"].unique())]


def test_band_from_three_runs_is_drawn_and_named():
    runs = make_runs()
    fig = plot_trace_curves(make_curves(runs), runs)
    assert _bands(_visible(fig)[0]) == 3  # one band per method
    title, _ = _legend_texts(fig)
    assert "±1 sd over runs" in title and f"n ≥ {MIN_BAND_N}" in title


def test_order_legend_gives_n_and_drops_error_bars_below_three_runs():
    positions = make_positions()
    fig = plot_unfreezing_order(positions.assign(n=2))
    axis = _visible(fig)[0]
    assert not any(c.has_yerr for c in axis.containers if isinstance(c, ErrorbarContainer))
    title, labels = _legend_texts(fig)
    assert "fisher (n=2)" in labels and "n ≥ 3" in title
    fig = plot_unfreezing_order(positions.assign(n=3))
    assert any(c.has_yerr for c in _visible(fig)[0].containers if isinstance(c, ErrorbarContainer))


# ------------------------------------------------------------------------------ relative plot
def test_relative_plot_has_a_unit_and_n():
    table = make_table().assign(n_seeds=4)
    fig = plot_relative_performance(table, error="xling_std", n="n_seeds", unit="accuracy points",
                                    reference_label="baseline standard (n=4)")
    for axis in _visible(fig):
        assert "(accuracy points)" in axis.get_ylabel()
        assert any(c.has_yerr for c in axis.containers if isinstance(c, ErrorbarContainer))
    title, labels = _legend_texts(fig)
    assert "n = runs" in title
    assert "fisher (n=4)" in labels and labels[-1] == "baseline standard (n=4)"


def test_relative_plot_draws_no_error_bar_from_two_runs():
    table = make_table().assign(n_seeds=2)
    fig = plot_relative_performance(table, error="xling_std", n="n_seeds")
    for axis in _visible(fig):
        assert not any(c.has_yerr for c in axis.containers if isinstance(c, ErrorbarContainer))
    title, labels = _legend_texts(fig)
    assert "no error bar" in title and "where n < 3" in title and "gradual (n=2)" in labels
    assert _visible(fig)[0].get_ylabel() == "difference to the baseline"  # not the column name


def test_relative_plot_percent_column_gets_its_unit():
    table = make_table().rename(columns={"rel_to_baseline": "rel_to_baseline_pct"})
    fig = plot_relative_performance(table, value="rel_to_baseline_pct")
    assert "% of the baseline" in _visible(fig)[0].get_ylabel()


# ------------------------------------------------------------------------------ constant features
def test_constant_feature_panel_is_dropped_and_named():
    runs = make_runs()
    points = make_feature_points(runs)
    points.loc[points["feature"] == "learning_period", "value"] = 120.0
    fig = plot_feature_vs_result(points, n_boot=20)
    axes = _visible(fig)
    assert len(axes) == 1  # only peak_value is drawn
    titles = " ".join(a.get_title() for a in axes) + fig.get_suptitle()
    assert "n/a" not in titles and "peak_value" in titles
    note = fig.get_supxlabel()
    assert "learning_period = 120" in note and "same value in every run" in note
    assert "peak tr(F)" in axes[0].get_xlabel()  # a labelled axis, not the column name


def test_constant_feature_on_callers_axes_says_why():
    from matplotlib.figure import Figure

    points = make_feature_points(make_runs())
    points = points.loc[points["feature"] == "learning_period"].assign(value=7.0)
    ax = Figure().subplots()
    plot_feature_vs_result(points, ax=ax, n_boot=20)
    assert "x is 7 in all 9 runs: no correlation" in ax.get_title()
    assert "n/a" not in ax.get_title()


def test_every_feature_constant_is_an_error():
    points = make_feature_points(make_runs()).assign(value=1.0)
    with pytest.raises(ValueError, match="same in every run"):
        plot_feature_vs_result(points, n_boot=20)


# ------------------------------------------------------------------------------ Figure 4
def _validation_figure(languages=("en", "de"), spread=True):
    runs = make_runs()
    metrics = make_metrics(runs)
    metrics = metrics.loc[metrics["language"].isin(languages)]
    if spread:  # the groups' validation curves on different ranges
        metrics = metrics.assign(value=metrics["value"] + 30 * metrics["run_id"].str.startswith("fisher"))
    groups = make_groups(runs).merge(runs[["run_id", "method"]], on="run_id")
    return plot_trace_validation(make_curves(runs), metrics, groups, result_label="cross-lingual avg."), groups


def test_group_panels_say_which_runs_they_hold():
    fig, groups = _validation_figure()
    left = [a for a in _visible(fig) if a.get_title()]
    assert len(left) == groups["group"].nunique()
    for axis, (group, members) in zip(left, groups.groupby("group"), strict=True):
        title = axis.get_title()
        assert "group: " not in title
        assert f"group {group}: {len(members)} runs, cross-lingual avg. " in title
        for method in members["method"].unique():
            assert method in title
        values = members["value"]
        assert f"{values.min():.2f}–{values.max():.2f}" in title
    assert "group" not in fig.get_suptitle()


def test_group_panels_share_left_and_right_ranges():
    fig, _ = _validation_figure()
    left = [a for a in _visible(fig) if a.get_title()]
    right = [a for a in _visible(fig) if not a.get_title()]
    assert len(left) == len(right) >= 2
    assert len({a.get_ylim() for a in left}) == 1
    assert len({a.get_ylim() for a in right}) == 1
    low, high = right[0].get_ylim()
    assert low <= 40 and high >= 40 + 20 + 2 + 30  # holds every group's validation values


@pytest.mark.parametrize("languages, expected", [(("en",), "(en)"), (("en", "de"), "(mean of de, en)")])
def test_right_axis_names_the_validated_languages(languages, expected):
    fig, _ = _validation_figure(languages)
    right = [a for a in _visible(fig) if not a.get_title()]
    assert all(expected in a.get_ylabel() for a in right)
    _, labels = _legend_texts(fig)
    assert any(expected in label for label in labels)


# ------------------------------------------------------------------------------ the report
def test_report_on_two_seeds_states_n_units_and_languages(tmp_path):
    from fisherlab.analysis.synthetic import write_synthetic_store
    from fisherlab.report import build_report

    write_synthetic_store(tmp_path / "runs", n_runs=8, methods=("standard", "gradual", "fisher", "random"),
                          seeds=(0, 1), center_range=(0.3, 0.3), width_range=(0.2, 0.2),
                          driver="peak_value")
    result = build_report(tmp_path / "runs", tmp_path / "report", n_boot=50, n_perm=50,
                          figures=("trace", "trace_validation", "relative", "feature_result"))
    assert sorted(result.figures) == ["feature_result", "relative", "trace", "trace_validation"]
    html = result.html.read_text(encoding="utf-8")
    assert "mean over languages" not in html
    assert "validation accuracy on en" in html  # the synthetic store validates the source only
    assert "in accuracy points" in html
    assert "(n=2 runs)" in html  # the baseline's n in the caption
    assert "is not drawn" in html  # constant features are explained in the caption
    features = pd.read_csv(result.tables["features"])
    assert features["peak_step"].nunique() == 1  # the case the caption explains
    assert features["peak_value"].nunique() == len(features)


def test_feature_panels_share_the_result_range():
    """The same runs' results: equal values at equal heights in every panel."""
    runs = make_runs()
    points = make_feature_points(runs)
    points.loc[points["feature"] == "learning_period", "value"] = np.arange(len(runs))[::-1] ** 3
    fig = plot_feature_vs_result(points, n_boot=20)
    axes = _visible(fig)
    assert len(axes) == 2 and len({a.get_ylim() for a in axes}) == 1
    low, high = axes[0].get_ylim()
    assert low < runs["xling_avg"].min() and high > runs["xling_avg"].max()
