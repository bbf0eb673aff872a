"""Result tables in the style of the FUN paper's Table 1 and Tables 8-10.

Per (model, task, method): the source-language score, the lowest-scoring target
language (named), the cross-lingual average over target languages (source excluded) as
mean +- std over seeds, and the difference to a designated baseline method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fisherlab.analysis.runset import RunSet

__all__ = ["result_table", "language_table"]

TABLE_COLUMNS = ["model", "task", "method", "source", "lowest", "lowest_language", "xling_avg",
                 "xling_std", "n_seeds", "rel_to_baseline"]


def _scores(runset: RunSet, by: Sequence[str]) -> pd.DataFrame:
    res = runset.results
    if res.empty:
        raise ValueError("no run has results (results.json); nothing to tabulate")
    meta_cols = ["run_id", "method", "source_language", *[c for c in by if c != "method"]]
    meta = runset.runs[list(dict.fromkeys(meta_cols))]
    return res.merge(meta, on="run_id", how="inner")


def language_table(runset: RunSet, by: Sequence[str] = ("model", "task")) -> pd.DataFrame:
    """Per ``by`` cell, method and language: ``mean``, ``std`` (ddof=1) and ``n`` over runs.

    The long form of the paper's per-language Tables 8-10; ``is_source`` marks the source
    language. Languages keep their order of first appearance in the results.
    """
    by = list(by)
    data = _scores(runset, by)
    order = {lang: i for i, lang in enumerate(dict.fromkeys(data["language"]))}
    out = (data.groupby([*by, "method", "language", "metric"], dropna=False, sort=False)
           .agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
                is_source=("is_source", "max"))
           .reset_index())
    out["_order"] = out["language"].map(order)
    out = out.sort_values([*by, "method", "_order"], kind="stable").drop(columns="_order")
    return out.reset_index(drop=True)


LOWEST_RULES = ("baseline", "own")
"""Table 1's "Lowest": ``baseline`` (the paper's) = one language per cell, the baseline
method's lowest target language, reported for every method; ``own`` = each method's own
lowest target language."""


def result_table(runset: RunSet, baseline: str | None = None,
                 by: Sequence[str] = ("model", "task"), lowest: str = "baseline") -> pd.DataFrame:
    """One row per ``by`` cell and method, as in the paper's Table 1.

    ``source``: mean over runs of the source-language score; ``lowest``: a target
    language's per-language mean over runs, ``lowest_language`` its code. With
    ``lowest="baseline"`` (default, the paper's Table 1: "Lowest" is one language per
    dataset and base model) the language is the one where the ``baseline`` method scores
    lowest, and every method reports its score on it; with ``lowest="own"`` (or without a
    baseline) each method reports its own lowest target language.
    ``xling_avg``/``xling_std``: mean and std (ddof=1) over runs of each run's average over
    its target languages (source excluded); ``n_seeds``: runs; ``rel_to_baseline``:
    ``xling_avg`` minus the baseline method's in the same cell (points) and
    ``rel_to_baseline_pct`` the same relative to the baseline in percent (Figure 2's
    "relative performance"); NaN without a baseline. Also ``source_language``, ``metric``,
    ``source_std`` and ``lowest_std``. Runs without results are not counted.
    """
    if lowest not in LOWEST_RULES:
        raise ValueError(f"result_table: lowest must be one of {LOWEST_RULES}, got {lowest!r}")
    by = list(by)
    data = _scores(runset, by)
    per_lang = (data.groupby([*by, "method", "language"], dropna=False, sort=False)
                .agg(mean=("value", "mean"), std=("value", "std"), is_source=("is_source", "max"))
                .reset_index())
    runs = runset.runs.loc[runset.runs["run_id"].isin(data["run_id"])]
    rows = []
    for key, part in runs.groupby([*by, "method"], dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        cell = dict(zip([*by, "method"], key, strict=True))
        mask = np.ones(len(per_lang), dtype=bool)
        for column, value in cell.items():
            col = per_lang[column]
            mask &= (col.isna() if pd.isna(value) else col == value).to_numpy()
        langs = per_lang.loc[mask]
        targets = langs.loc[~langs["is_source"].astype(bool)]
        source = langs.loc[langs["is_source"].astype(bool)]
        worst = targets.sort_values(["mean", "language"], kind="stable").head(1)
        xling = part["xling_avg"].astype(float)
        rows.append({**cell,
                     "source": float(source["mean"].mean()) if len(source) else np.nan,
                     "lowest": float(worst["mean"].iloc[0]) if len(worst) else np.nan,
                     "lowest_language": worst["language"].iloc[0] if len(worst) else None,
                     "xling_avg": float(xling.mean()),
                     "xling_std": float(xling.std(ddof=1)) if xling.notna().sum() > 1 else np.nan,
                     "n_seeds": int(len(part)),
                     "rel_to_baseline": np.nan, "rel_to_baseline_pct": np.nan,
                     "source_language": ",".join(sorted(map(str, part["source_language"].dropna().unique()))),
                     "metric": ",".join(sorted(map(str, part["result_metric"].dropna().unique()))),
                     "source_std": float(source["std"].iloc[0]) if len(source) == 1 else np.nan,
                     "lowest_std": float(worst["std"].iloc[0]) if len(worst) else np.nan})
    columns = [*by, "method", *TABLE_COLUMNS[3:], "rel_to_baseline_pct", "source_language", "metric",
               "source_std", "lowest_std"]
    out = pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))
    if baseline is not None and not out.empty:
        if baseline not in set(out["method"]):
            raise ValueError(f"result_table: baseline method {baseline!r} not found; methods: "
                             f"{sorted(set(out['method']))}")
        for _, idx in (out.groupby(by, dropna=False, sort=False).indices.items() if by
                       else [((), np.arange(len(out)))]):
            cell = out.iloc[idx]
            base = cell.loc[cell["method"] == baseline, "xling_avg"]
            if len(base):
                ref = float(base.iloc[0])
                out.loc[out.index[idx], "rel_to_baseline"] = cell["xling_avg"].to_numpy() - ref
                out.loc[out.index[idx], "rel_to_baseline_pct"] = (
                    100.0 * (cell["xling_avg"].to_numpy() / ref - 1.0) if ref != 0 else np.nan)
        if lowest == "baseline":
            _lowest_under_baseline(out, per_lang, baseline, by)
    return out


def _lowest_under_baseline(out: pd.DataFrame, per_lang: pd.DataFrame, baseline: str, by: list[str]) -> None:
    """In place: each method's ``lowest`` on its cell's baseline-lowest language (NaN if not run there)."""
    targets = per_lang.loc[~per_lang["is_source"].astype(bool)]
    lookup = {tuple("<NA>" if pd.isna(v) else v for v in key): (m, sd) for key, m, sd in zip(
        targets[[*by, "method", "language"]].itertuples(index=False, name=None),
        targets["mean"], targets["std"], strict=True)}
    cells = out.groupby(by, dropna=False, sort=False).indices.items() if by else [((), np.arange(len(out)))]
    for _, idx in cells:
        cell = out.iloc[idx]
        base = cell.loc[cell["method"] == baseline, "lowest_language"]
        language = base.iloc[0] if len(base) else None
        for i in idx:
            row = out.iloc[i]
            key = (*("<NA>" if pd.isna(row[c]) else row[c] for c in by), row["method"], language)
            mean, std = lookup.get(key, (np.nan, np.nan)) if language is not None else (np.nan, np.nan)
            out.iloc[i, out.columns.get_loc("lowest")] = float(mean)
            out.iloc[i, out.columns.get_loc("lowest_std")] = float(std)
            out.iloc[i, out.columns.get_loc("lowest_language")] = language
