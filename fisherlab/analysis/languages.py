"""Target-language tr(F): per-language curves and features, and how they relate to transfer.

The probe can measure the true Fisher on unlabelled inputs of each target language
(``--probe_languages``; rows in ``RunSet.target_fisher``). This module turns those rows
into per-language curves and curve features -- the same definitions as for the source
curve (:func:`fisherlab.analysis.trace_curves`, :func:`fisherlab.analysis.curve_features`),
applied per language -- and tests two relations with confidence intervals:

* :func:`language_relation` -- across runs, per language: a language's tr(F) feature vs
  that language's zero-shot result (Spearman by default, bootstrap CI over runs,
  permutation p, Holm/BH over languages; :func:`fisherlab.analysis.correlate`).
* :func:`language_ranking` / :func:`ranking_summary` -- within a run, across languages:
  the ranking of the languages by the feature vs by their results (Spearman or Kendall
  per run), then the mean over runs with a bootstrap CI over runs and a permutation p
  (languages' results shuffled within each run).

Torch-free (analysis side).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fisherlab.analysis.curves import trace_curves
from fisherlab.analysis.features import FEATURES, curve_features
from fisherlab.analysis.loading import FISHER_COLUMNS
from fisherlab.analysis.runset import RunSet
from fisherlab.analysis.stats import (
    CORRELATION_METHODS,
    benjamini_hochberg,
    correlate,
    correlation_batch,
    holm,
)

__all__ = ["has_target_fisher", "language_curves", "language_features", "language_ranking",
           "language_relation", "language_results", "ranking_summary"]


def has_target_fisher(runset: RunSet) -> bool:
    """Whether any run has tr(F) rows measured on target-language inputs."""
    return len(getattr(runset, "target_fisher", ())) > 0


def _languages(runset: RunSet) -> list[str]:
    return sorted(runset.target_fisher["language"].dropna().unique().tolist()) if has_target_fisher(runset) else []


def language_curves(runset: RunSet, window: int = 5, normalise: bool = True) -> pd.DataFrame:
    """One row per run, language and probe step: ``language`` + the columns of
    :func:`trace_curves` (mean tr(F) over the trainable layer blocks, smoothed), computed on
    each language's rows exactly as the source curve is on ``runset.fisher``."""
    parts = []
    for language in _languages(runset):
        rows = runset.target_fisher.loc[runset.target_fisher["language"] == language, FISHER_COLUMNS]
        view = dataclasses.replace(runset, fisher=rows.reset_index(drop=True))
        parts.append(trace_curves(view, window=window, normalise=normalise).assign(language=language))
    if not parts:
        return pd.DataFrame(columns=["run_id", "language", "step", "trace_sum", "n_trainable", "trace",
                                     "trace_smooth"])
    out = pd.concat(parts, ignore_index=True)
    return out[["run_id", "language", *[c for c in out.columns if c not in ("run_id", "language")]]]


def language_features(runset: RunSet, value: str = "trace_smooth", window: int = 5,
                      early_fraction: float = 0.25) -> pd.DataFrame:
    """Long frame ``run_id, language, feature, value``: :data:`FEATURES` of each run's curve
    per target language (:func:`curve_features`)."""
    curves = language_curves(runset, window=window)
    parts = [curve_features(group, value=value, early_fraction=early_fraction).assign(language=language)
             for language, group in curves.groupby("language", sort=True)]
    if not parts:
        return pd.DataFrame(columns=["run_id", "language", "feature", "value"])
    return pd.concat(parts, ignore_index=True)[["run_id", "language", "feature", "value"]]


def language_results(runset: RunSet, metric: str | None = None) -> pd.DataFrame:
    """``run_id, language, result``: zero-shot scores of the target languages (``metric``:
    one of the stored metrics; default: each run's own)."""
    res = runset.results
    res = res.loc[~res["is_source"].astype(bool)]
    if metric is not None:
        res = res.loc[res["metric"] == metric]
    return pd.DataFrame({"run_id": res["run_id"].to_numpy(), "language": res["language"].to_numpy(),
                         "result": res["value"].to_numpy(dtype=float)})


def _paired(runset: RunSet, feature: str, features: pd.DataFrame | None, metric: str | None) -> pd.DataFrame:
    """``run_id, language, <feature>, result`` for every run and language having both."""
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    feats = language_features(runset) if features is None else features
    picked = feats.loc[feats["feature"] == feature, ["run_id", "language", "value"]].rename(columns={"value": feature})
    return picked.merge(language_results(runset, metric), on=["run_id", "language"], how="inner")


def language_relation(runset: RunSet, feature: str = "peak_value", method: str = "spearman",
                      n_boot: int = 2000, n_perm: int = 2000, seed: int = 0, ci: float = 0.95,
                      features: pd.DataFrame | None = None, metric: str | None = None) -> pd.DataFrame:
    """Across runs, per target language: correlation of the language's tr(F) ``feature``
    with its zero-shot result. One row per language: ``language, x, y, method, r, ci_low,
    ci_high, p_value, n, unit, n_boot, n_perm, p_holm, p_bh`` (Holm/BH across languages);
    one observation is one run. ``features``: a precomputed :func:`language_features` frame."""
    data = _paired(runset, feature, features, metric)
    parts = []
    for language, group in data.groupby("language", sort=True):
        cell_seed = (int(seed) + zlib.crc32(str(language).encode())) & 0xFFFFFFFF
        row = correlate(group.drop(columns="language"), None, feature, "result", method=method, n_boot=n_boot,
                        n_perm=n_perm, seed=cell_seed, by=(), ci=ci)
        parts.append(row.assign(language=language))
    columns = ["language", "x", "y", "method", "r", "ci_low", "ci_high", "p_value", "n", "unit", "n_boot",
               "n_perm", "p_holm", "p_bh"]
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["p_bh"] = benjamini_hochberg(out["p_value"].to_numpy())
    return out[columns]


def language_ranking(runset: RunSet, feature: str = "peak_value", method: str = "spearman",
                     features: pd.DataFrame | None = None, metric: str | None = None) -> pd.DataFrame:
    """Within each run, across its target languages: correlation of the languages' ranking by
    tr(F) ``feature`` with their ranking by result. One row per run: ``run_id, method, r,
    n_languages, order_by_feature, order_by_result`` (languages, highest first); runs with
    fewer than 3 languages get ``r`` NaN."""
    if method not in CORRELATION_METHODS:
        raise ValueError(f"method must be one of {CORRELATION_METHODS}, got {method!r}")
    data = _paired(runset, feature, features, metric).dropna()
    rows = []
    for run_id, group in data.groupby("run_id", sort=True):
        x, y = group[feature].to_numpy(dtype=float), group["result"].to_numpy(dtype=float)
        langs = group["language"].to_numpy()
        r = float(correlation_batch(x[None], y[None], method)[0]) if len(x) >= 3 else np.nan
        rows.append({"run_id": run_id, "method": method, "r": r, "n_languages": len(x),
                     "order_by_feature": ",".join(langs[np.argsort(-x, kind="stable")]),
                     "order_by_result": ",".join(langs[np.argsort(-y, kind="stable")])})
    return pd.DataFrame(rows, columns=["run_id", "method", "r", "n_languages", "order_by_feature",
                                       "order_by_result"])


def ranking_summary(runset: RunSet, feature: str = "peak_value", methods: Sequence[str] = ("spearman", "kendall"),
                    n_boot: int = 2000, n_perm: int = 2000, seed: int = 0, ci: float = 0.95,
                    features: pd.DataFrame | None = None, metric: str | None = None) -> pd.DataFrame:
    """The distribution over runs of the within-run ranking agreement, per method: ``mean_r``,
    ``median_r``, a percentile bootstrap CI of the mean over runs (``n_boot``), and a
    permutation p-value (``n_perm`` draws; each draw shuffles the results among the
    languages of every run independently; two-sided on the mean). ``unit`` is "run"."""
    data = _paired(runset, feature, features, metric).dropna()
    rows = []
    for method in methods:
        per_run = language_ranking(runset, feature, method, features=features, metric=metric)
        ok = per_run["r"].notna().to_numpy()
        r = per_run["r"].to_numpy(dtype=float)[ok]
        out = {"x": feature, "y": "result", "method": method, "mean_r": np.nan, "median_r": np.nan,
               "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "n_runs": int(ok.sum()),
               "unit": "run", "n_boot": int(n_boot), "n_perm": int(n_perm)}
        if r.size:
            out["mean_r"], out["median_r"] = float(r.mean()), float(np.median(r))
            rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF,
                                                                zlib.crc32(f"{feature}/{method}".encode())]))
            if n_boot > 0 and r.size > 1:
                boot = r[rng.integers(0, r.size, size=(n_boot, r.size))].mean(axis=1)
                alpha = (1.0 - ci) / 2.0
                out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
            if n_perm > 0:
                out["p_value"] = _permutation_p(data, feature, method, per_run.loc[ok, "run_id"], out["mean_r"],
                                                n_perm, rng)
        rows.append(out)
    return pd.DataFrame(rows)


def _permutation_p(data: pd.DataFrame, feature: str, method: str, run_ids: pd.Series, observed: float,
                   n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided p of the mean within-run correlation under shuffled results within runs."""
    null = np.zeros(n_perm)
    for run_id in run_ids:
        group = data.loc[data["run_id"] == run_id]
        x, y = group[feature].to_numpy(dtype=float), group["result"].to_numpy(dtype=float)
        perm = rng.permuted(np.tile(np.arange(len(y)), (n_perm, 1)), axis=1)
        null += correlation_batch(np.broadcast_to(x, (n_perm, len(x))), y[perm], method)
    null /= len(run_ids)
    return float((1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (1 + n_perm))
