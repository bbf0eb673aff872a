"""The report page: overview, estimators, problems, figures, tables (all text escaped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fisherlab.report import html as H
from fisherlab.report.options import FIGURES


def _link(path: Path, out: Path) -> str:
    rel = path.relative_to(out).as_posix()
    return f'<a href="{H.esc(rel)}">{H.esc(rel)}</a>'


def _labels(values: pd.Series) -> list[str]:
    """Values as text, missing ones as ``(unknown)`` (pandas' astype(str) keeps NaN)."""
    return ["(unknown)" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def _overview(ctx: Any) -> H.Section:
    meta = ctx.meta
    sec = H.Section("overview", "Overview")
    n_results = int(np.isfinite(meta["xling_avg"].to_numpy(dtype=float)).sum())
    sec.add(H.paragraph(
        f"{len(meta)} runs read, {n_results} with results; {len(ctx.runset.problems)} problems "
        "(skipped or repaired items, listed below). Results are cross-lingual averages over the "
        "target languages (the source language excluded)."))
    labelled = meta.assign(**{c: _labels(meta[c]) for c in ("model", "task", "method", "estimator")})
    counts = (labelled.groupby(["model", "task", "method", "estimator"], sort=True).size()
              .rename("runs").reset_index())
    sec.add(H.table(counts, caption="Runs per model, task, method and estimator"))
    items = sorted(ctx.options.to_dict().items())
    opts = pd.DataFrame({"option": [k for k, _ in items],
                         "value": ["(default)" if v is None else str(v) for _, v in items]}, dtype=object)
    sec.add("<details><summary>Options</summary>" + H.table(opts) + "</details>")
    for text in ctx.notes:
        sec.add(H.note(text))
    return sec


def _estimators(ctx: Any) -> H.Section:
    sec = H.Section("estimators", "tr(F) estimators behind the curves")
    meta = ctx.meta
    runs = ctx.runset.runs
    rows = []
    for estimator, part in meta.groupby(meta["estimator"].astype(str), sort=True):
        row = {"estimator": estimator, "runs": len(part),
               "methods": ", ".join(sorted(part["method"].astype(str).unique()))}
        sub = runs.loc[runs["run_id"].isin(set(part["run_id"]))]
        for column in ("fisher.every", "fisher.n_batches"):
            if column in sub.columns:
                values = sorted({str(v) for v in sub[column].dropna()})
                row[column.split(".", 1)[1]] = ", ".join(values)
        fisher = ctx.runset.fisher
        n = fisher.loc[fisher["run_id"].isin(set(part["run_id"])), "n_examples"]
        n = pd.to_numeric(n, errors="coerce").dropna()
        row["median n_examples per probe"] = float(n.median()) if len(n) else None
        rows.append(row)
    sec.add(H.table(pd.DataFrame(rows)))
    if len(rows) > 1:
        policy = ctx.options.estimator_policy
        sec.add(H.note(
            "These runs measured tr(F) with different estimators, which are not comparable: "
            + ("every figure gets a separate panel per estimator." if policy == "facet"
               else "figures that would mix them are not drawn (estimator_policy='refuse').")))
    sec.add(H.paragraph("Estimators are described in docs/estimators.md (per_example: sampled labels, "
                        "per-example gradients; exact: expectation over classes; batch; empirical: "
                        "data labels, a different quantity; reference: the FUN paper's code).",
                        cls="unit"))
    return sec


def _problems(problems: pd.DataFrame) -> H.Section:
    sec = H.Section("problems", "Skipped and repaired items")
    if problems.empty:
        sec.add(H.paragraph("None: every file was read as written."))
    else:
        sec.add(H.paragraph(f"{len(problems)} item(s); the action says what the reader did."))
        sec.add(H.table(problems, max_rows=500))
    return sec


def _figures(ctx: Any, drawn: dict, written: dict, skipped: dict, out: Path) -> H.Section:
    sec = H.Section("figures", "Figures")
    for name in ctx.options.figures:
        sec.add(f"<h3 id=\"fig-{H.esc(name)}\">{H.esc(FIGURES[name])}</h3>")
        if name in skipped:
            sec.add(H.note(f"Skipped: {skipped[name]}"))
            continue
        item = drawn[name]
        png = next(p for p in written[name] if p.suffix == ".png")
        sec.add(H.image(png.read_bytes(), alt=FIGURES[name], caption=item.caption, unit=item.unit))
        for text in item.notes:
            sec.add(H.note(text))
        sec.add("<p class=\"unit\">Files: " + ", ".join(_link(p, out) for p in written[name]) + "</p>")
    not_requested = [n for n in FIGURES if n not in ctx.options.figures]
    if not_requested:
        sec.add(H.paragraph("Not requested: " + ", ".join(not_requested) + ".", cls="unit"))
    return sec


def _tables(ctx: Any, table_paths: dict[str, Path], out: Path) -> H.Section:
    sec = H.Section("tables", "Tables")
    for name in ctx.tables:
        if name == "problems":
            continue
        sec.add(f"<h3 id=\"table-{H.esc(name)}\">{H.esc(name)}</h3>")
        sec.add(H.paragraph(ctx.table_captions[name]))
        sec.add(f"<p class=\"unit\">Unit of replication: {H.esc(ctx.table_units[name])}. "
                f"CSV: {_link(table_paths[name], out)}</p>")
        sec.add(H.table(ctx.tables[name]))
    return sec


def render_page(ctx: Any, drawn: dict, written: dict, skipped: dict, problems: pd.DataFrame,
                table_paths: dict[str, Path], out: Path) -> str:
    """The complete, self-contained report.html text."""
    intro = [H.paragraph("Generated by fisherlab analyze. Figures are embedded; PDF and PNG files, "
                         "CSV tables and summary.json sit beside this page.", cls="unit")]
    sections = [
        _overview(ctx),
        _estimators(ctx),
        _problems(problems),
        _figures(ctx, drawn, written, skipped, out),
        _tables(ctx, table_paths, out),
    ]
    return H.page(ctx.options.title, intro, sections)
