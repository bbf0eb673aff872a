"""Result tables in the style of the FUN paper's Table 1 and Tables 8-10.

Per (model, task, method): the source-language score, the lowest-scoring target
language (named), the cross-lingual average over target languages (source excluded) as
mean +- std over seeds, and the difference to a designated baseline method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fisherlab.analysis.loading import RunSet

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


def result_table(runset: RunSet, baseline: str | None = None,
                 by: Sequence[str] = ("model", "task")) -> pd.DataFrame:
    """One row per ``by`` cell and method, as in the paper's Table 1.

    ``source``: mean over runs of the source-language score; ``lowest``: the lowest of the
    per-language means over runs among target languages, ``lowest_language`` its code;
    ``xling_avg``/``xling_std``: mean and std (ddof=1) over runs of each run's average over
    its target languages (source excluded); ``n_seeds``: runs; ``rel_to_baseline``:
    ``xling_avg`` minus the baseline method's in the same cell (points) and
    ``rel_to_baseline_pct`` the same relative to the baseline in percent (Figure 2's
    "relative performance"); NaN without a baseline. Also ``source_language``, ``metric``,
    ``source_std`` and ``lowest_std``. Runs without results are not counted.
    """
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
        lowest = targets.sort_values(["mean", "language"], kind="stable").head(1)
        xling = part["xling_avg"].astype(float)
        rows.append({**cell,
                     "source": float(source["mean"].mean()) if len(source) else np.nan,
                     "lowest": float(lowest["mean"].iloc[0]) if len(lowest) else np.nan,
                     "lowest_language": lowest["language"].iloc[0] if len(lowest) else None,
                     "xling_avg": float(xling.mean()),
                     "xling_std": float(xling.std(ddof=1)) if xling.notna().sum() > 1 else np.nan,
                     "n_seeds": int(len(part)),
                     "rel_to_baseline": np.nan, "rel_to_baseline_pct": np.nan,
                     "source_language": ",".join(sorted(map(str, part["source_language"].dropna().unique()))),
                     "metric": ",".join(sorted(map(str, part["result_metric"].dropna().unique()))),
                     "source_std": float(source["std"].iloc[0]) if len(source) == 1 else np.nan,
                     "lowest_std": float(lowest["std"].iloc[0]) if len(lowest) else np.nan})
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
    return out
