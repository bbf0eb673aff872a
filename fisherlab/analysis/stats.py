"""Statistics over runs: correlations with bootstrap CIs and permutation p-values,
multiple-testing correction, and method comparisons over seeds and languages.

Every random quantity is drawn from a ``numpy.random.Generator`` seeded from ``seed`` and
the identity of the cell/test, so results do not depend on the order of evaluation.
Each output says in its ``unit`` column what one observation (unit of replication) is.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from fisherlab.analysis.runset import RunSet

__all__ = ["correlate", "correlation_grid", "compare_methods", "holm", "benjamini_hochberg",
           "correlation_batch", "resample_ranks", "CORRELATION_METHODS"]

CORRELATION_METHODS = ("spearman", "kendall", "pearson")
_KENDALL_VECTOR_LIMIT = 20_000_000  # B * n * n elements for the vectorised tau-b


# ----------------------------------------------------------------------------- helpers
def _rng(seed: int, *parts: object) -> np.random.Generator:
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(repr(p).encode()) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(words))


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    num = (xc * yc).sum(axis=-1)
    den = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    b, n = x.shape
    if b * n * n <= _KENDALL_VECTOR_LIMIT:
        iu = np.triu_indices(n, k=1)
        sx = np.sign(x[:, :, None] - x[:, None, :])[:, iu[0], iu[1]]
        sy = np.sign(y[:, :, None] - y[:, None, :])[:, iu[0], iu[1]]
        num = (sx * sy).sum(axis=1)
        den = np.sqrt(np.abs(sx).sum(axis=1) * np.abs(sy).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    out = np.empty(b)
    for i in range(b):
        out[i] = sps.kendalltau(x[i], y[i], variant="b").statistic
    return out


def resample_ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of each row of ``values[idx]``, in O(B * n).

    Equals ``scipy.stats.rankdata(values[idx], axis=1)``: a resampled row only holds
    values of ``values``, so its ranks follow from how often each distinct value was drawn.
    """
    uniques, codes = np.unique(values, return_inverse=True)
    m = len(uniques)
    b = idx.shape[0]
    drawn = codes[idx]
    counts = np.bincount((np.arange(b)[:, None] * m + drawn).ravel(), minlength=b * m).reshape(b, m)
    before = np.cumsum(counts, axis=1) - counts
    return (np.take_along_axis(before, drawn, axis=1)
            + (np.take_along_axis(counts, drawn, axis=1) + 1) / 2.0)


def correlation_batch(x: np.ndarray, y: np.ndarray, method: str = "spearman") -> np.ndarray:
    """Correlation of each row pair of ``x``, ``y`` (shape ``(B, n)``); NaN where undefined.

    ``spearman``: Pearson on average ranks; ``kendall``: tau-b (ties corrected);
    ``pearson``: product-moment. Matches scipy's ``spearmanr``/``kendalltau``/``pearsonr``.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    if method == "pearson":
        return _pearson_rows(x, y)
    if method == "spearman":
        return _pearson_rows(sps.rankdata(x, axis=-1), sps.rankdata(y, axis=-1))
    if method == "kendall":
        return _kendall_rows(x, y)
    raise ValueError(f"method must be one of {CORRELATION_METHODS}, got {method!r}")


def _adjust_sorted(p: Sequence[float] | np.ndarray, step: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``step`` to the finite p-values sorted ascending; NaN entries stay NaN; capped at 1."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not ok.size:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    out[order] = np.minimum(step(p[order]), 1.0)
    return out


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error); NaN entries stay NaN."""
    return _adjust_sorted(p, lambda s: np.maximum.accumulate((s.size - np.arange(s.size)) * s))


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate); NaN entries stay NaN."""
    return _adjust_sorted(p, lambda s: np.minimum.accumulate((s * s.size / np.arange(1, s.size + 1))[::-1])[::-1])


def _wide(frame: pd.DataFrame | RunSet, what: str) -> pd.DataFrame:
    """A per-run wide frame: RunSet -> its runs frame; long features -> pivoted; wide as is."""
    if isinstance(frame, RunSet):
        return frame.runs
    if not isinstance(frame, pd.DataFrame) or "run_id" not in frame.columns:
        raise ValueError(f"{what} must be a RunSet or a DataFrame with a run_id column")
    if {"feature", "value"} <= set(frame.columns) and frame["run_id"].duplicated().any():
        wide = frame.pivot(index="run_id", columns="feature", values="value").reset_index()
        wide.columns.name = None
        return wide
    if frame["run_id"].duplicated().any():
        raise ValueError(f"{what}: more than one row per run_id (pass a per-run frame)")
    return frame


def _merged(features, results) -> pd.DataFrame:
    left = _wide(features, "features")
    right = _wide(results, "results") if results is not None else None
    if right is None:
        return left
    overlap = [c for c in right.columns if c in left.columns and c != "run_id"]
    return left.merge(right, on="run_id", how="inner", suffixes=("", "_results")).drop(
        columns=[f"{c}_results" for c in overlap], errors="ignore")


def _cells(data: pd.DataFrame, by: Sequence[str]) -> list[tuple[tuple, np.ndarray]]:
    if not by:
        return [((), np.arange(len(data)))]
    missing = [c for c in by if c not in data.columns]
    if missing:
        raise ValueError(f"grouping column(s) {missing} not found (columns: {list(data.columns)[:20]}...); "
                         "pass by=() to pool all runs")
    groups = data.groupby(list(by), dropna=False, sort=False).indices
    return sorted(((k if isinstance(k, tuple) else (k,), v) for k, v in groups.items()),
                  key=lambda kv: tuple(str(x) for x in kv[0]))


# ------------------------------------------------------------------------- correlations
def _correlate_arrays(x: np.ndarray, y: np.ndarray, method: str, n_boot: int, n_perm: int,
                      ci: float, rng: np.random.Generator) -> dict[str, float]:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    out = {"r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "n": n}
    if n < 3:
        return out
    r = float(correlation_batch(x[None], y[None], method)[0])
    out["r"] = r
    if not np.isfinite(r):
        return out
    if n_boot > 0:
        idx = rng.integers(0, n, size=(n_boot, n))
        if method == "spearman":  # average ranks of resamples without sorting
            boot = _pearson_rows(resample_ranks(x, idx), resample_ranks(y, idx))
        else:
            boot = correlation_batch(x[idx], y[idx], method)
        boot = boot[np.isfinite(boot)]
        if boot.size:
            alpha = (1.0 - ci) / 2.0
            out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
    if n_perm > 0:
        perm = rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)
        if method == "kendall":
            null = correlation_batch(np.broadcast_to(x, (n_perm, n)), y[perm], method)
        else:  # ranks are invariant under permutation: rank once, then Pearson
            rx, ry = (sps.rankdata(x), sps.rankdata(y)) if method == "spearman" else (x, y)
            null = _pearson_rows(np.broadcast_to(rx, (n_perm, n)), ry[perm])
        exceed = np.sum(np.abs(null) >= abs(r) - 1e-12)
        out["p_value"] = float((1 + exceed) / (1 + n_perm))
    return out


def correlate(features: pd.DataFrame | RunSet, results: pd.DataFrame | RunSet | None, x: str, y: str,
              method: str = "spearman", n_boot: int = 2000, n_perm: int = 2000, seed: int = 0,
              by: Sequence[str] | None = ("model", "task"), ci: float = 0.95) -> pd.DataFrame:
    """Correlation of column ``x`` with column ``y`` over runs, one row per ``by`` cell.

    ``features`` and ``results`` are per-run frames joined on ``run_id``: the long output
    of :func:`curve_features` is pivoted, a RunSet contributes its ``runs`` frame (with
    ``xling_avg``, ``source_score``, ``lowest_score``, ``model``, ``task``, ...). Runs with a
    missing ``x`` or ``y`` are left out (``n`` counts the pairs used). ``r`` is Spearman's
    rho (default), Kendall's tau-b or Pearson's r; ``ci_low``/``ci_high`` a percentile
    bootstrap interval over runs resampled in pairs (``n_boot`` draws); ``p_value`` a
    two-sided permutation p-value ``(1 + #{|r_perm| >= |r|}) / (1 + n_perm)``. Fewer than 3
    pairs give NaN. ``unit`` is "run": one run is one observation.
    """
    if method not in CORRELATION_METHODS:
        raise ValueError(f"method must be one of {CORRELATION_METHODS}, got {method!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    data = _merged(features, results)
    for column in (x, y):
        if column not in data.columns:
            raise ValueError(f"correlate: no column {column!r}; available: {sorted(map(str, data.columns))[:40]}")
    by = tuple(by or ())
    rows = []
    xs = pd.to_numeric(data[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(data[y], errors="coerce").to_numpy(dtype=float)
    for key, idx in _cells(data, by):
        rng = _rng(seed, key, x, y, method)
        res = _correlate_arrays(xs[idx], ys[idx], method, int(n_boot), int(n_perm), ci, rng)
        rows.append({**dict(zip(by, key, strict=True)), "x": x, "y": y, "method": method, **res,
                     "unit": "run", "n_boot": int(n_boot), "n_perm": int(n_perm)})
    columns = [*by, "x", "y", "method", "r", "ci_low", "ci_high", "p_value", "n", "unit", "n_boot", "n_perm"]
    out = pd.DataFrame(rows, columns=columns)
    out["n"] = out["n"].astype(np.int64)
    return out


def correlation_grid(features: pd.DataFrame | RunSet, results: pd.DataFrame | RunSet | None,
                     xs: Sequence[str] | None = None, ys: Sequence[str] = ("xling_avg",),
                     method: str = "spearman", n_boot: int = 2000, n_perm: int = 2000, seed: int = 0,
                     by: Sequence[str] | None = ("model", "task"),
                     family: Sequence[str] | None = None, ci: float = 0.95) -> pd.DataFrame:
    """:func:`correlate` for every ``x`` in ``xs`` and ``y`` in ``ys``, with corrected p-values.

    ``xs`` defaults to every feature of a long ``features`` frame (else required).
    ``p_holm`` (Holm) and ``p_bh`` (Benjamini-Hochberg) adjust ``p_value`` across the whole
    grid -- all x, y and cells -- or within each ``family`` group (columns of the output,
    e.g. ``("model", "task")``).
    """
    if xs is None:
        if isinstance(features, pd.DataFrame) and "feature" in features.columns:
            xs = list(dict.fromkeys(features["feature"]))
        else:
            raise ValueError("correlation_grid: pass xs (the columns to correlate)")
    parts = [correlate(features, results, x, y, method=method, n_boot=n_boot, n_perm=n_perm,
                       seed=seed, by=by, ci=ci) for x in xs for y in ys]
    out = pd.concat(parts, ignore_index=True)
    out["p_holm"] = np.nan
    out["p_bh"] = np.nan
    if family:
        groups = out.groupby(list(family), dropna=False, sort=False).indices.values()
    else:
        groups = [np.arange(len(out))]
    for idx in groups:
        p = out["p_value"].to_numpy()[idx]
        out.loc[out.index[idx], "p_holm"] = holm(p)
        out.loc[out.index[idx], "p_bh"] = benjamini_hochberg(p)
    return out


# --------------------------------------------------------------------- method comparison
def _target_scores(runset: RunSet, metric: str | None, by: Sequence[str]) -> pd.DataFrame:
    res = runset.results
    if res.empty:
        raise ValueError("compare_methods: no run has results")
    res = res.loc[~res["is_source"].astype(bool)]
    if metric is not None:
        res = res.loc[res["metric"] == metric]
        if res.empty:
            raise ValueError(f"compare_methods: no results with metric {metric!r}")
    meta = runset.runs[["run_id", "method", *[c for c in by if c != "method"]]]
    data = res.merge(meta, on="run_id", how="left")
    if metric is None:
        mixed = data.groupby(list(by), dropna=False)["metric"].nunique()
        if (mixed > 1).any():
            raise ValueError(f"compare_methods: cells mix metrics ({mixed[mixed > 1].index.tolist()}); "
                             "pass metric=...")
    return data


def _stratified_means(strata: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap draws of the mean over strata of each stratum's mean (resampled within)."""
    total = np.zeros(n_boot)
    for values in strata:
        idx = rng.integers(0, len(values), size=(n_boot, len(values)))
        total += values[idx].mean(axis=1)
    return total / len(strata)


def _prob_improvement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean over strata of P(X > Y) + 0.5 P(X = Y), X from ``a``, Y from ``b`` (all pairs)."""
    probs = []
    for x, y in zip(a, b, strict=True):
        diff = x[:, None] - y[None, :]
        probs.append(float(np.mean((diff > 0) + 0.5 * (diff == 0))))
    return float(np.mean(probs))


def compare_methods(runset: RunSet, metric: str | None = None, baseline: str | None = None,
                    n_boot: int = 2000, seed: int = 0, by: Sequence[str] = ("model", "task"),
                    ci: float = 0.95) -> pd.DataFrame:
    """Cross-lingual score of each method over seeds and target languages, per ``by`` cell.

    Per run, the score is the mean over its target languages (source excluded) = the run's
    ``xling_avg``. ``mean``/``std`` are over runs (``std`` with ddof=1; ``n_seeds`` runs,
    normally one per seed). ``ci_low``/``ci_high``: stratified bootstrap with languages as
    strata -- within each target language the method's runs are resampled with
    replacement and the statistic is the mean over languages of the per-language means.
    With a ``baseline`` method: ``p_improve`` is the probability of improvement, the mean
    over languages of P(score of a run of this method > score of a baseline run) (ties
    count 1/2), and ``diff`` with ``diff_ci_low``/``diff_ci_high`` the difference of means
    to the baseline with a stratified bootstrap interval (both methods resampled
    independently within each language). Languages are those both methods were scored on.
    """
    by = tuple(by or ())
    data = _target_scores(runset, metric, by)
    rows = []
    for key, idx in _cells(data, by):
        cell = data.iloc[idx]
        table = cell.pivot_table(index=["method", "run_id"], columns="language", values="value",
                                 aggfunc="mean")
        methods = sorted(table.index.get_level_values("method").unique())
        if baseline is not None and baseline in methods:
            base = table.xs(baseline, level="method")
        for method in methods:
            sub = table.xs(method, level="method")
            per_run = sub.mean(axis=1, skipna=True)
            languages = [lang for lang in sub.columns if sub[lang].notna().any()]
            strata = [sub[lang].dropna().to_numpy() for lang in languages]
            rng = _rng(seed, key, method, "ci")
            draws = _stratified_means(strata, int(n_boot), rng) if n_boot > 0 else np.array([])
            alpha = (1.0 - ci) / 2.0
            lo, hi = (np.quantile(draws, [alpha, 1.0 - alpha]) if draws.size else (np.nan, np.nan))
            row = {**dict(zip(by, key, strict=True)), "method": method,
                   "mean": float(per_run.mean()), "std": float(per_run.std(ddof=1)) if len(per_run) > 1 else np.nan,
                   "ci_low": float(lo), "ci_high": float(hi), "p_improve": np.nan,
                   "n_seeds": int(len(per_run)), "unit": "run (seed); target languages as bootstrap strata",
                   "metric": ",".join(sorted(cell["metric"].unique())), "baseline": baseline,
                   "diff": np.nan, "diff_ci_low": np.nan, "diff_ci_high": np.nan,
                   "n_languages": len(languages)}
            if baseline is not None and baseline in methods and method != baseline:
                shared = [lang for lang in languages if lang in base.columns and base[lang].notna().any()]
                a = [sub[lang].dropna().to_numpy() for lang in shared]
                b = [base[lang].dropna().to_numpy() for lang in shared]
                if shared:
                    row["p_improve"] = _prob_improvement(a, b)
                    row["diff"] = float(np.mean([x.mean() for x in a]) - np.mean([y.mean() for y in b]))
                    if n_boot > 0:
                        rng = _rng(seed, key, method, baseline, "diff")
                        diff = _stratified_means(a, int(n_boot), rng) - _stratified_means(b, int(n_boot), rng)
                        row["diff_ci_low"], row["diff_ci_high"] = (
                            float(v) for v in np.quantile(diff, [alpha, 1.0 - alpha]))
            rows.append(row)
    columns = [*by, "method", "mean", "std", "ci_low", "ci_high", "p_improve", "n_seeds", "unit",
               "metric", "baseline", "diff", "diff_ci_low", "diff_ci_high", "n_languages"]
    return pd.DataFrame(rows, columns=columns)
