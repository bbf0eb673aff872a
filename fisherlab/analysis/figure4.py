"""Which runs and values the FUN paper's Figure 4 groups (section 5.2, footnotes 9-10).

Figure 4 groups the 10 schedules of the permutation study -- the 9 sampled permutations
(method label ``permutation``) and the plain top-down order (``top_down``) -- by their
cross-lingual result, per model and dataset; the other methods are not part of it. For QA
the models are trained on SQuAD and evaluated on MLQA and XQuAD, and the group value is
the mean of the two F1 averages. In fisherlab, MLQA and XQuAD are separate tasks (a run
each); runs of the two with the same model, estimator, method, strategy and seed are the
same training, so each gets the pair's mean as its value and the task label ``qa``. When a
sweep ran ``gradual`` (the top-down order itself) instead of a separate ``top_down`` run, the
``gradual`` runs of a cell with permutation runs stand in for ``top_down``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["FIGURE4_METHODS", "QA_TASKS", "figure4_values"]

FIGURE4_METHODS = ("permutation", "top_down")
"""Method labels of the permutation study (``fisherlab.spec.methods``)."""

QA_TASKS: Mapping[str, tuple[str, ...]] = {"qa": ("mlqa", "xquad")}
"""Merged task label -> the tasks whose results are averaged (same training run)."""

_PAIR_KEYS = ("model", "estimator", "method", "strategy", "seed")
TOP_DOWN = "top_down"
GRADUAL_STAND_IN = "gradual"
"""A sweep that runs ``gradual`` plans no separate ``top_down`` run: GU *is* the top-down
order, so in a cell with permutation runs and no ``top_down`` run its ``gradual`` runs
stand in as the 10th schedule."""


def _gradual_as_top_down(frame: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The ``gradual`` runs of the (model, task, estimator) cells that have permutation runs but no top_down run."""
    cell = [c for c in ("model", "task", "estimator") if c in frame.columns]
    key = lambda f: f[cell].astype(str).apply("\x1f".join, axis=1)  # noqa: E731
    if chosen.empty:
        return chosen
    has_top = set(key(chosen.loc[chosen["method"].astype(str) == TOP_DOWN]))
    with_perm = set(key(chosen.loc[chosen["method"].astype(str) == "permutation"]))
    gradual = frame.loc[frame["method"].astype(str) == GRADUAL_STAND_IN]
    if gradual.empty:
        return gradual
    keys = key(gradual)
    return gradual.loc[keys.isin(with_perm - has_top)]


def figure4_values(runs: pd.DataFrame, methods: Sequence[str] | None = FIGURE4_METHODS,
                   merge_tasks: Mapping[str, Sequence[str]] | None = QA_TASKS) -> tuple[pd.DataFrame, list[str]]:
    """``(values, notes)``: ``run_id, value, model, task, estimator, method`` of the runs to group.

    ``runs`` has ``run_id``, ``xling_avg`` and the columns above (plus ``strategy`` and
    ``seed``). ``methods`` keeps runs of those method labels (None: every run); when no run
    has one of them, every run is kept and a note says so. ``merge_tasks`` relabels
    the tasks of each entry and replaces each run's value by the mean over its partners'
    (a run without a partner in every task keeps its own value; a note counts them).
    """
    notes: list[str] = []
    frame = runs.copy()
    if methods is not None:
        chosen = frame.loc[frame["method"].astype(str).isin(list(methods))]
        if TOP_DOWN in methods and GRADUAL_STAND_IN not in methods:
            chosen = pd.concat([chosen, _gradual_as_top_down(frame, chosen)])
        if chosen.empty:
            notes.append(f"no {' / '.join(methods)} runs (the permutation study): grouping every run")
        else:
            frame = chosen
    frame = frame.assign(value=frame["xling_avg"].astype(float))
    for label, tasks in (merge_tasks or {}).items():
        part = frame.loc[frame["task"].astype(str).isin(list(tasks))]
        if part.empty:
            continue
        keys = [k for k in _PAIR_KEYS if k in part.columns]
        key_frame = part[keys].astype(str)
        pair_key = key_frame.apply(lambda row: "\x1f".join(row), axis=1)
        n_tasks = part.groupby(pair_key)["task"].transform("nunique").to_numpy()
        mean = part.groupby(pair_key)["value"].transform("mean").to_numpy(dtype=float)
        complete = n_tasks == len(set(tasks))
        frame.loc[part.index, "value"] = np.where(complete, mean, part["value"].to_numpy(dtype=float))
        frame.loc[part.index, "task"] = label
        if not complete.all():
            notes.append(f"{int((~complete).sum())} {'/'.join(tasks)} run(s) without a partner in every task "
                         f"keep their own value")
    columns = ["run_id", "value", "model", "task", "estimator", "method"]
    return frame[columns].reset_index(drop=True), notes
