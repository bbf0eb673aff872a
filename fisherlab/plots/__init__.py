"""Paper-ready figures from the tidy analysis frames (seaborn; never imports torch).

One function per figure; each takes tidy DataFrames (``fisherlab.analysis``
output), returns a :class:`PaperFigure` (a :class:`matplotlib.figure.Figure` that shows
itself as an image in Jupyter under any backend) and leaves matplotlib's global
rcParams alone. :func:`save_figure` writes a byte-reproducible vector
PDF (Type 42 fonts) and a PNG. :func:`method_colors` is the one method ->
colour mapping every figure uses (colour-blind palette).
"""

from __future__ import annotations

from fisherlab.plots._bands import MIN_BAND_N
from fisherlab.plots._facets import MixedEstimatorError
from fisherlab.plots.correlation import (
    plot_feature_vs_result,
    plot_trace_vs_accuracy,
    plot_two_stage_gain,
)
from fisherlab.plots.curves import plot_trace_curves, plot_trace_validation
from fisherlab.plots.figure import PaperFigure
from fisherlab.plots.performance import plot_relative_performance
from fisherlab.plots.schedules import plot_unfreezing_order
from fisherlab.plots.style import (
    PALETTE,
    method_color,
    method_colors,
    paper_style,
    save_figure,
)

__all__ = [
    "MIN_BAND_N",
    "PALETTE",
    "MixedEstimatorError",
    "PaperFigure",
    "method_color",
    "method_colors",
    "paper_style",
    "plot_feature_vs_result",
    "plot_relative_performance",
    "plot_trace_curves",
    "plot_trace_validation",
    "plot_trace_vs_accuracy",
    "plot_two_stage_gain",
    "plot_unfreezing_order",
    "save_figure",
]
