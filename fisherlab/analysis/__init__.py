"""Analysis of run stores: tidy frames, tr(F) curves and features, the paper's grouping
rule, unfreezing schedules, statistics and result tables (``docs/analysis.md``).

Never imports torch: a user with the run store, pandas and scipy can analyse.
"""

from __future__ import annotations

from fisherlab.analysis.curves import centred_moving_average, scale_01, trace_curves, trainable_mask
from fisherlab.analysis.features import FEATURES, curve_features, features_wide, hill_width
from fisherlab.analysis.grouping import group_runs
from fisherlab.analysis.loading import (
    NoRunsError,
    flatten_config,
    load_runs,
    parse_strategy,
)
from fisherlab.analysis.locate import RUNS_ENV, find_run_store
from fisherlab.analysis.runset import RunSet
from fisherlab.analysis.schedules import (
    count_permutation_schedules,
    mean_unfreeze_position,
    order_agreement,
    sample_permutation_schedules,
    unfreezing_orders,
)
from fisherlab.analysis.stats import (
    benjamini_hochberg,
    compare_methods,
    correlate,
    correlation_batch,
    correlation_grid,
    holm,
)
from fisherlab.analysis.tables import language_table, result_table

__all__ = [
    "FEATURES",
    "NoRunsError",
    "RUNS_ENV",
    "RunSet",
    "benjamini_hochberg",
    "centred_moving_average",
    "compare_methods",
    "correlate",
    "correlation_batch",
    "correlation_grid",
    "count_permutation_schedules",
    "curve_features",
    "features_wide",
    "find_run_store",
    "flatten_config",
    "group_runs",
    "hill_width",
    "holm",
    "language_table",
    "load_runs",
    "mean_unfreeze_position",
    "order_agreement",
    "parse_strategy",
    "result_table",
    "sample_permutation_schedules",
    "scale_01",
    "trace_curves",
    "trainable_mask",
    "unfreezing_orders",
]
