"""The report's inputs and shared context: the run set, per-run metadata, cached tr(F) curves."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fisherlab.report.options import (
    ReportError,
    ReportOptions,
)

RUN_TABLE_COLUMNS = ["run_id", "status", "method", "model", "task", "task_module", "seed", "k",
                     "estimator", "source_language", "result_metric", "source_score", "xling_avg",
                     "lowest_language", "lowest_score"]


class SkipFigure(Exception):
    """A figure's inputs are absent; the message is shown in the report."""


@dataclass
class Drawn:
    """A drawn figure with its caption and the unit its bands/statistics replicate over."""

    figure: Any
    caption: str
    unit: str
    notes: list[str] = field(default_factory=list)


def safe_filename(name: str, max_len: int = 80) -> str:
    """A file name that stays in its folder: ``[A-Za-z0-9._-]`` only, no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return cleaned[:max_len] or "unnamed"


# ------------------------------------------------------------------------------ inputs
def _load(runset_or_paths: Any, options: ReportOptions) -> Any:
    from fisherlab.analysis import RunSet, load_runs
    from fisherlab.analysis.loading import NoRunsError

    if isinstance(runset_or_paths, RunSet):
        runset = runset_or_paths
    else:
        paths = [runset_or_paths] if isinstance(runset_or_paths, (str, os.PathLike)) else list(runset_or_paths)
        if not paths:
            raise ReportError("no input: give run directories, parents of run directories or globs")
        try:
            runset = load_runs(paths, progress=options.progress)
        except NoRunsError as err:
            raise ReportError(str(err)) from err
    if len(runset.runs) == 0:
        raise ReportError("no runs to report on (the run set is empty)")
    return runset


def _run_meta(runset: Any) -> pd.DataFrame:
    """One row per run: method, model, task, estimator (as measured), result, source score."""
    runs = runset.runs
    meta = runs[["run_id"]].copy()
    for column in ("method", "model", "task", "seed", "xling_avg", "result_metric"):
        meta[column] = runs[column] if column in runs.columns else np.nan
    meta["estimator"] = [_estimator_label(v) for v in runs.get("estimator", [None] * len(runs))]
    fisher = runset.fisher
    if len(fisher) and "estimator" in fisher.columns:
        measured = (fisher.dropna(subset=["estimator"]).groupby("run_id")["estimator"]
                    .agg(lambda s: "+".join(sorted({str(v) for v in s}))))
        meta["estimator"] = [measured.get(r, e) for r, e in zip(meta["run_id"], meta["estimator"], strict=True)]
    results = runset.results
    if len(results):
        source = results.loc[results["is_source"].astype(bool)].groupby("run_id")["value"].first()
        meta["source_score"] = meta["run_id"].map(source).astype(float)
    else:
        meta["source_score"] = np.nan
    meta["xling_avg"] = pd.to_numeric(meta["xling_avg"], errors="coerce").astype(float)
    return meta


def _estimator_label(value: Any) -> str:
    try:
        missing = value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        missing = False
    return "(unknown)" if missing else str(value)


def _pick_column(columns: Iterable[str], wanted: str | None, candidates: Iterable[str],
                 what: str) -> str | None:
    columns = list(columns)
    if wanted is not None:
        if wanted not in columns:
            raise SkipFigure(f"{what} column {wanted!r} is not a run column")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    return None


# ------------------------------------------------------------------------------ context
@dataclass
class _Context:
    runset: Any
    options: ReportOptions
    meta: pd.DataFrame
    palette: dict[str, Any]
    curves: pd.DataFrame | None = None
    features: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    table_units: dict[str, str] = field(default_factory=dict)
    table_captions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_table(self, name: str, frame: pd.DataFrame, caption: str, unit: str) -> None:
        self.tables[name] = frame
        self.table_captions[name] = caption
        self.table_units[name] = unit

    def result_runs(self) -> pd.DataFrame:
        """Runs with a finite result (``xling_avg``), restricted to ``options.metric``."""
        meta = self.meta.loc[np.isfinite(self.meta["xling_avg"].to_numpy(dtype=float))]
        if self.options.metric is not None:
            meta = meta.loc[meta["result_metric"].astype(str) == self.options.metric]
        return meta


def _curves(ctx: _Context) -> pd.DataFrame:
    from fisherlab.analysis import trace_curves

    if ctx.curves is None:
        if len(ctx.runset.fisher) == 0:
            ctx.curves = pd.DataFrame(columns=["run_id", "step", "trace_sum", "n_trainable", "trace",
                                               "trace_smooth", "trace_scaled"])
        else:
            try:
                ctx.curves = trace_curves(ctx.runset, window=ctx.options.window, normalise=True, scale01=True)
            except ValueError as err:  # no block with a layer index: count every block
                ctx.notes.append(f"tr(F) curves include every block (not only layer blocks): {err}")
                ctx.curves = trace_curves(ctx.runset, window=ctx.options.window, normalise=True,
                                          scale01=True, layers_only=False)
    return ctx.curves


def _features(ctx: _Context) -> pd.DataFrame:
    from fisherlab.analysis import curve_features

    if ctx.features is None:
        curves = _curves(ctx)
        ctx.features = curve_features(curves, value="trace_smooth", early_fraction=ctx.options.early_fraction)
    return ctx.features


def _final_trace(ctx: _Context) -> pd.DataFrame:
    """``run_id, final_trace, final_step, trace_scope``: tr(F) summed over the trainable layer
    blocks (head excluded) at each run's last probe; fully fine-tuned runs: the whole model's
    (:func:`fisherlab.analysis.final.final_traces`)."""
    from fisherlab.analysis.final import final_traces

    return final_traces(ctx.runset, layer_curves=_curves(ctx), window=ctx.options.window)


#: ``trace_scope`` of :func:`fisherlab.analysis.final.final_traces` -> what the x axis sums.
_SCOPE_TEXT = {"whole_model": "whole model", "trainable_layers": "sum over trainable layer blocks"}


def final_trace_scope_text(scopes: Iterable[str]) -> str:
    """What a final tr(F) axis holds, from the ``trace_scope`` values of its points: one scope's
    text, or both rules when fully fine-tuned and adapter runs share the axis."""
    found = sorted({str(s) for s in scopes})
    if len(found) == 1:
        return _SCOPE_TEXT.get(found[0], found[0])
    return "whole model (full FT) or trainable layer blocks"
