"""``build_report``: a run store in, an HTML report + figures + CSV tables + summary out.

Every figure is drawn from the tidy frames of ``fisherlab.analysis`` by a
``fisherlab.plots`` function. A figure whose inputs are absent (no regulariser
runs, no validation curve, ...) is skipped with the reason; every item the
reader skipped or repaired is listed with its reason. Nothing is written
outside ``out_dir`` and the file names never derive from run names. The same
input and options give the same files (seeded bootstraps, dateless PDFs).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fisherlab.report.context import Drawn, SkipFigure, _Context, _load, _run_meta, safe_filename
from fisherlab.report.figures import FIGURE_BUILDERS
from fisherlab.report.options import (
    FIGURES,
    ReportError,
    ReportOptions,
    ReportResult,
)
from fisherlab.report.tables import _baseline, _compute_tables


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [_json_safe(dict(zip(frame.columns, row, strict=True)))
            for row in frame.itertuples(index=False, name=None)]


def _problems_frame(runset: Any) -> pd.DataFrame:
    problems = runset.problems
    if problems is None or len(problems) == 0:
        return pd.DataFrame(columns=["run", "file", "line", "reason", "action"])
    return problems.reset_index(drop=True)


#: Every table a report can write (stale copies from an earlier report are removed).
TABLE_NAMES = ("runs", "results", "methods", "features", "correlations", "groups", "unfreeze_positions",
               "order_agreement", "problems")


def _remove_stale(figures_dir: Path, tables_dir: Path) -> None:
    """Delete files an earlier report wrote under these names, so no stale figure survives."""
    for name in FIGURES:
        for suffix in (".pdf", ".png", ".svg"):
            path = figures_dir / (safe_filename(name) + suffix)
            if path.is_file():
                path.unlink()
    for name in TABLE_NAMES:
        path = tables_dir / (safe_filename(name) + ".csv")
        if path.is_file():
            path.unlink()


def build_report(runset_or_paths: Any, out_dir: str | os.PathLike, **options: Any) -> ReportResult:
    """Analyse runs and write ``report.html``, ``figures/``, ``tables/`` and ``summary.json``.

    ``runset_or_paths``: a ``RunSet`` (from ``fisherlab.analysis.load_runs``) or run
    directories / parents / globs. ``options``: the fields of :class:`ReportOptions`
    (``baseline``, ``metric``, ``delta``, ``window``, ``figures``, ``estimator_policy``,
    ``n_boot``, ``n_perm``, ``seed``, ...). Raises :class:`ReportError` when there is
    nothing to report on; figures without inputs are skipped with a note.
    """
    from fisherlab import __version__
    from fisherlab.plots import method_colors, save_figure

    opts = ReportOptions.from_kwargs(**options)
    runset = _load(runset_or_paths, opts)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    figures_dir, tables_dir = out / "figures", out / "tables"
    figures_dir.mkdir(parents=True, exist_ok=True)
    tables_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(figures_dir, tables_dir)

    meta = _run_meta(runset)
    methods = sorted(set(meta["method"].astype(str)))
    if opts.baseline is not None and opts.baseline not in methods:  # a typo must not pass silently
        raise ReportError(f"--baseline {opts.baseline!r} is not a method of these runs; methods present: "
                          f"{', '.join(methods)}")
    ctx = _Context(runset=runset, options=opts, meta=meta, palette=method_colors(meta["method"].astype(str)))
    _compute_tables(ctx)

    drawn: dict[str, Drawn] = {}
    skipped: dict[str, str] = {}
    written: dict[str, list[Path]] = {}
    for name in opts.figures:
        try:
            result = FIGURE_BUILDERS[name](ctx)
        except SkipFigure as why:
            skipped[name] = str(why)
            continue
        except ValueError as err:  # data the figure cannot draw (e.g. mixed estimators refused)
            skipped[name] = f"not drawn: {err}"
            continue
        drawn[name] = result
        written[name] = save_figure(result.figure, figures_dir / safe_filename(name), formats=opts.formats)

    problems = _problems_frame(runset)
    ctx.add_table("problems", problems, "Everything the reader skipped or repaired, with the reason.",
                  "one row per problem")
    table_paths: dict[str, Path] = {}
    for name, frame in ctx.tables.items():
        path = tables_dir / (safe_filename(name) + ".csv")
        frame.to_csv(path, index=False, lineterminator="\n")
        table_paths[name] = path

    summary = {
        "fisherlab": __version__,
        "n_runs": int(len(runset.runs)),
        "n_problems": int(len(problems)),
        "methods": _json_safe(meta["method"].astype(str).value_counts().sort_index().to_dict()),
        "estimators": _json_safe(meta["estimator"].astype(str).value_counts().sort_index().to_dict()),
        "baseline": _baseline(ctx),
        "figures": {k: [str(p.relative_to(out)) for p in v] for k, v in written.items()},
        "skipped_figures": skipped,
        "tables": {k: str(p.relative_to(out)) for k, p in table_paths.items()},
        "options": _json_safe(opts.to_dict()),
        "notes": ctx.notes,
        "problems": _records(problems),
    }
    for name in ("methods", "correlations"):
        if name in ctx.tables:
            summary[name] = _records(ctx.tables[name])
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(_json_safe(summary), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    from fisherlab.report.page import render_page

    html_path = out / "report.html"
    html_path.write_text(render_page(ctx, drawn, written, skipped, problems, table_paths, out),
                         encoding="utf-8")
    return ReportResult(out_dir=out, html=html_path, summary_path=summary_path, summary=summary,
                        figures=written, tables=table_paths, skipped=skipped, problems=problems)


__all__ = ["build_report", "safe_filename", "FIGURES", "ReportError", "ReportOptions", "ReportResult"]
