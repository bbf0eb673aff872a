"""Load run directories into a :class:`RunSet` of tidy pandas frames.

``load_runs`` discovers run directories (a run dir, a parent of many at any depth, or a
glob), reads them with :func:`fisherlab.runs.read_runs` and returns long frames keyed by
``run_id``. Everything skipped or repaired is a row of ``RunSet.problems``; the same
input always gives the same frames (runs sorted by run_id, then path).
"""

from __future__ import annotations

import copy
import glob
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fisherlab.analysis.runset import RunSet
from fisherlab.analysis.target_rows import target_fisher_frame
from fisherlab.errors import FisherlabError
from fisherlab.runs import RunFormatError, find_run_dirs, labels_of, read_run_info, read_runs
from fisherlab.runs.cache import RunCache
from fisherlab.runs.labels import flatten_config, legacy_config_value
from fisherlab.spec.grammar import SpecError, parse_spec

__all__ = ["RunSet", "NoRunsError", "load_runs", "flatten_config", "parse_strategy", "RUN_COLUMNS", "FISHER_COLUMNS",
           "SCHEDULE_COLUMNS", "METRICS_COLUMNS", "RESULTS_COLUMNS", "PROBLEM_COLUMNS"]

RUN_COLUMNS = ["run_id", "path", "status", "method", "strategy", "k", "seed", "model", "task",
               "task_module", "estimator", "regulariser", "regulariser_weight", "source_language",
               "result_metric", "xling_avg"]
FISHER_COLUMNS = ["run_id", "step", "block", "layer", "trace", "stderr", "trainable", "n_examples",
                  "estimator"]
SCHEDULE_COLUMNS = ["run_id", "step", "event", "block", "layer", "position", "strategy"]
METRICS_COLUMNS = ["run_id", "step", "split", "language", "metric", "value"]
RESULTS_COLUMNS = ["run_id", "metric", "language", "value", "is_source"]
PROBLEM_COLUMNS = ["run", "file", "line", "reason", "action"]

class NoRunsError(FisherlabError, ValueError):
    """``load_runs`` found no readable run (the message lists what was tried and why)."""


# ---------------------------------------------------------------------------- config
def parse_strategy(spec: Any) -> tuple[str | None, dict[str, str]]:
    """Strategy name and raw parameters of a stored strategy string (the one spec grammar,
    :func:`fisherlab.spec.parse_spec`), e.g. ``"gradual:k=800"`` -> ``("gradual", {"k": "800"})``;
    ``(None, {})`` for None or a string the grammar rejects."""
    if spec is None:
        return None, {}
    try:
        return parse_spec(str(spec), "strategy")
    except SpecError:
        return None, {}


# ---------------------------------------------------------------------------- inputs
def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _discover(paths_or_globs: Any) -> tuple[list[Path], list[dict]]:
    if isinstance(paths_or_globs, (str, os.PathLike)):
        items = [paths_or_globs]
    else:
        items = list(paths_or_globs)
    if not items:
        raise NoRunsError("load_runs: no paths given (expected run directories, parents of run "
                          "directories or globs)")
    problems: list[dict] = []
    found: dict[str, Path] = {}
    for item in items:
        text = os.fspath(item)
        if _has_magic(text) and not Path(text).exists():
            candidates = sorted(glob.glob(text, recursive=True))
            if not candidates:
                problems.append({"run": None, "file": text, "line": None,
                                 "reason": "glob matched nothing", "action": "ignored input"})
        else:
            candidates = [text]
            if not Path(text).exists():
                problems.append({"run": None, "file": text, "line": None,
                                 "reason": "no such file or directory", "action": "ignored input"})
                continue
        for candidate in candidates:
            dirs = find_run_dirs(candidate)
            if not dirs:
                problems.append({"run": None, "file": str(candidate), "line": None,
                                 "reason": "no run directory (one holding run.json) at or below it",
                                 "action": "ignored input"})
            for run_dir in dirs:
                found.setdefault(str(run_dir.resolve()), run_dir)
    return [found[key] for key in sorted(found)], problems


# ---------------------------------------------------------------------------- frames
def _run_row(path: Path, info: dict, results: dict | None, fisher_estimator: str | None,
             problems: list[dict]) -> dict:
    labels, why = labels_of(info)
    if why:
        problems.append({"run": info["run_id"], "file": str(Path(path) / "run.json"), "line": None,
                         "reason": why, "action": "repaired (legacy labels)"})
    flat = flatten_config(info.get("config", {}))
    spec = labels["strategy"]
    strategy, params = parse_strategy(spec)
    fisher_info = info.get("fisher", {})
    estimator = labels["estimator"] or fisher_estimator
    k = None
    if "k" in params:
        try:
            k = float(params["k"])
        except ValueError:
            k = None
    if k is None:  # a config may carry k beside a strategy string without it
        k = legacy_config_value(info.get("config", {}), "k")
    row: dict[str, Any] = {
        "run_id": info["run_id"], "path": str(path), "status": info.get("status"),
        "method": labels["method"], "strategy": strategy,
        "k": float(k) if type(k) in (int, float) else np.nan,
        "seed": labels["seed"], "model": labels["model"], "task": labels["task"],
        "task_module": labels["task_module"], "estimator": estimator,
        "regulariser": labels["regulariser"],
        "regulariser_weight": np.nan if labels["regulariser_weight"] is None else float(labels["regulariser_weight"]),
        "source_language": None, "result_metric": None, "xling_avg": np.nan,
        "source_score": np.nan, "lowest_score": np.nan, "lowest_language": None,
        "n_target_languages": 0, "strategy_spec": spec,
        "created": info.get("created"), "finished": info.get("finished"),
    }
    if results is not None:
        source = results["source_language"]
        targets = {lang: v for lang, v in results["per_language"].items() if lang != source}
        row.update(source_language=source, result_metric=results["metric"],
                   source_score=results["per_language"].get(source, np.nan),
                   n_target_languages=len(targets))
        if targets:
            lowest = min(targets, key=lambda lang: (targets[lang], lang))
            row.update(xling_avg=float(np.mean(list(targets.values()))), lowest_score=targets[lowest],
                       lowest_language=lowest)
        for key, value in results.items():
            if key not in ("metric", "source_language", "per_language"):
                if isinstance(value, Mapping):
                    row.update(flatten_config(value, prefix=f"results.{key}."))
                elif not isinstance(value, (list, tuple)):
                    row[f"results.{key}"] = value
    for key, value in flatten_config(fisher_info, prefix="fisher.").items():
        row[key] = value
    for key, value in flat.items():
        row[f"config.{key}"] = value
    return row


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})


def _schedule_frame(events: pd.DataFrame, run_ids: list[str], layer_of: dict[tuple[int, str], int],
                    problems: list[dict], files: dict[int, str]) -> pd.DataFrame:
    """One row per (event, block); ``position`` = rank of the event among layer unfreezings."""
    if events.empty:
        return _empty(SCHEDULE_COLUMNS)
    events = events.sort_values(["run", "step", "line"], kind="stable")
    rows: dict[str, list] = {c: [] for c in SCHEDULE_COLUMNS}
    current_run, position, unfrozen = None, 0, set()
    for run, step, event, blocks, strategy, line in zip(
            events["run"], events["step"], events["event"], events["blocks"], events["strategy"],
            events["line"], strict=True):
        if run != current_run:
            current_run, position, unfrozen = run, 0, set()
        advanced = False
        for block in blocks:
            layer = layer_of.get((run, block))
            if layer is None and block.startswith("layer.") and block[6:].isdigit():
                layer = int(block[6:])
            pos = None
            if event == "unfreeze":
                if block in unfrozen:
                    problems.append({"run": run_ids[run], "file": files.get(run), "line": int(line),
                                     "reason": f"block {block!r} unfrozen again at step {step}",
                                     "action": "repaired (kept the first unfreezing)"})
                    continue
                unfrozen.add(block)
                if layer is not None:
                    pos, advanced = position, True
            rows["run_id"].append(run_ids[run])
            rows["step"].append(int(step))
            rows["event"].append(event)
            rows["block"].append(block)
            rows["layer"].append(layer)
            rows["position"].append(pos)
            rows["strategy"].append(strategy)
        if advanced:
            position += 1
    frame = pd.DataFrame(rows)
    frame["step"] = frame["step"].astype(np.int64)
    frame["layer"] = pd.array(frame["layer"].tolist(), dtype="Int64")
    frame["position"] = pd.array(frame["position"].tolist(), dtype="Int64")
    for column in ("run_id", "event", "block", "strategy"):
        frame[column] = frame[column].astype("str")
    return frame


def _sort_fisher(fisher: pd.DataFrame) -> np.ndarray:
    """Row order: run (already in RunSet order), step, layer (non-layer blocks last), block."""
    layer = fisher["layer"].to_numpy(dtype=float, na_value=np.inf)
    block_codes = pd.factorize(fisher["block"], sort=True)[0]
    keys = (block_codes, layer, fisher["step"].to_numpy(), fisher["run"].to_numpy())
    return np.lexsort(keys)


def _open_cache(cache: bool | str | os.PathLike | None) -> RunCache | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return RunCache(None)
    if isinstance(cache, (str, os.PathLike)):
        return RunCache(cache)
    raise TypeError(f"load_runs: cache={cache!r}; expected True, False or a directory path")


def load_runs(paths_or_globs: str | os.PathLike | Iterable[str | os.PathLike],
              progress: bool = False, cache: bool | str | os.PathLike = True) -> RunSet:
    """Read every run under ``paths_or_globs`` into a :class:`RunSet` of tidy frames.

    Each input may be a run directory, a parent of run directories (any depth), a
    ``run.json`` file or a glob. Raises :class:`NoRunsError` when no run can be read;
    anything else skipped or repaired is a row of ``RunSet.problems``.

    ``cache``: what the reader parsed is kept per run (:mod:`fisherlab.runs.cache`) and
    reused while the run's files are unchanged (same sizes and modification times), so
    re-reading a store in a notebook is fast; the frames are the same as without it.
    ``True`` (default): beside each run (``RUN_DIR/.fisherlab-cache.pkl``; the user cache
    directory for a read-only store); a path: that directory; ``False``: no cache.
    """
    run_cache = _open_cache(cache)
    run_dirs, problems = _discover(paths_or_globs)
    if not run_dirs:
        reasons = "; ".join(f"{p['file']}: {p['reason']}" for p in problems)
        raise NoRunsError(f"load_runs: no run directories found ({reasons})")

    # run.json first: run ids decide the order of everything else.
    entries: list[tuple[Path, dict, list[dict]]] = []
    cached: dict[Path, tuple[tuple, dict | None, dict | None]] = {}  # run dir -> key, payload, fresh info
    for run_dir in run_dirs:
        payload, stale = None, []
        if run_cache is not None:
            seen_problems = len(run_cache.problems)
            key, payload = run_cache.get(run_dir)
            stale = run_cache.problems[seen_problems:]
        if payload is not None:
            info, info_problems = payload["info"], payload["info_problems"]
        else:
            try:
                info, info_problems = read_run_info(run_dir)
            except (RunFormatError, OSError) as err:
                problems.append({"run": str(run_dir), "file": str(run_dir / "run.json"), "line": None,
                                 "reason": str(err), "action": "skipped run"})
                continue
        if run_cache is not None:  # what the cache would store: run.json as read, before any renaming
            fresh = None if payload is not None else {"info": copy.deepcopy(info),
                                                      "info_problems": copy.deepcopy(info_problems)}
            cached[run_dir] = (key, payload, fresh)
        for problem in stale:
            problem["run"] = info["run_id"]
        entries.append((run_dir, info, stale + info_problems))
    if not entries:
        reasons = "; ".join(f"{p['file']}: {p['reason']}" for p in problems[:10])
        raise NoRunsError(f"load_runs: none of the {len(run_dirs)} run directories could be read ({reasons})")
    seen: Counter[str] = Counter(info["run_id"] for _, info, _ in entries)
    used: Counter[str] = Counter()
    for run_dir, info, info_problems in entries:  # unique run ids: never merge two runs
        run_id = info["run_id"]
        used[run_id] += 1
        if used[run_id] > 1:
            n = used[run_id]
            new_id = f"{run_id}#{n}"
            while new_id in seen:
                n += 1
                new_id = f"{run_id}#{n}"
            seen[new_id] += 1
            info_problems.append({"run": run_id, "file": str(run_dir / "run.json"), "line": None,
                                  "reason": f"run_id {run_id!r} already used by another run",
                                  "action": f"repaired (renamed to {new_id!r})"})
            info["run_id"] = new_id
            cached.pop(run_dir, None)  # a renamed run is read afresh and not cached (its id depends on others)
    entries.sort(key=lambda e: (e[1]["run_id"], str(e[0])))
    files = [cached[e[0]][1]["files"] if e[0] in cached and cached[e[0]][1] is not None else None
             for e in entries]
    read: list[tuple[int, dict]] = []
    tables = read_runs([e[0] for e in entries], progress=progress,
                       infos=[(e[1], e[2]) for e in entries], files=files, read=read)
    for i, found in read:
        run_dir = entries[i][0]
        if run_dir in cached and cached[run_dir][2] is not None:
            key, _, fresh = cached[run_dir]
            run_cache.put(run_dir, key, {**fresh, "files": found})
    problems.extend(tables.problems)
    run_ids = [entry["info"]["run_id"] for entry in tables.runs]
    id_array = np.asarray(run_ids, dtype=object)

    fisher = tables.fisher
    is_target = fisher["language"].notna().to_numpy() if "language" in fisher else np.zeros(len(fisher), bool)
    target_fisher = target_fisher_frame(fisher.loc[is_target], id_array)
    if is_target.any():
        fisher = fisher.loc[~is_target].reset_index(drop=True)
    row_estimators: dict[int, str] = {}
    if not fisher.empty and fisher["estimator"].notna().any():
        counts = fisher.loc[fisher["estimator"].notna()].groupby(["run", "estimator"]).size()
        for (run, estimator), _ in counts.sort_values(ascending=False, kind="stable").items():
            row_estimators.setdefault(int(run), str(estimator))

    runs = pd.DataFrame([_run_row(e["path"], e["info"], e["results"], row_estimators.get(i), problems)
                         for i, e in enumerate(tables.runs)])
    runs["k"] = runs["k"].astype(float)
    runs["xling_avg"] = runs["xling_avg"].astype(float)
    leading = [c for c in RUN_COLUMNS if c in runs.columns]
    config_cols = sorted(c for c in runs.columns if c.startswith("config."))
    other = [c for c in runs.columns if c not in leading and c not in config_cols]
    runs = runs[leading + other + config_cols]

    if fisher.empty:
        fisher_frame = _empty(FISHER_COLUMNS)
    else:
        idx = _sort_fisher(fisher)
        if np.array_equal(idx, np.arange(len(idx))):
            idx = None
        run_col = fisher["run"].to_numpy()
        estimator = fisher["estimator"]
        if estimator.isna().any():
            fill = np.array([runs["estimator"].iat[i] if pd.notna(runs["estimator"].iat[i]) else None
                             for i in range(len(runs))], dtype=object)
            values = estimator.astype(object).to_numpy(copy=True)
            missing = pd.isna(values)
            values[missing] = fill[run_col[missing]]
            estimator = pd.Series(pd.array(values, dtype="str"))
        codes = pd.Series(pd.array(id_array, dtype="str"))
        fisher_frame = pd.DataFrame({
            "run_id": codes.take(run_col).reset_index(drop=True),
            "step": fisher["step"], "block": fisher["block"], "layer": fisher["layer"],
            "trace": fisher["trace"], "stderr": fisher["stderr"], "trainable": fisher["trainable"],
            "n_examples": fisher["n_examples"], "estimator": estimator.reset_index(drop=True),
        })
        if idx is not None:
            fisher_frame = fisher_frame.take(idx).reset_index(drop=True)

    layer_of: dict[tuple[int, str], int] = {}
    if not fisher.empty:
        known = fisher.loc[fisher["layer"].notna(), ["run", "block", "layer"]].drop_duplicates(["run", "block"])
        layer_of = {(int(r), b): int(layer) for r, b, layer in known.itertuples(index=False, name=None)}
    files = {i: str(Path(e["path"]) / "schedule.jsonl") for i, e in enumerate(tables.runs)}
    schedule = _schedule_frame(tables.schedule, run_ids, layer_of, problems, files)

    metrics = tables.metrics
    if metrics.empty:
        metrics_frame = _empty(METRICS_COLUMNS)
    else:
        metrics = metrics.sort_values(["run", "step", "split", "language", "metric", "line"],
                                      kind="stable", na_position="first")
        metrics_frame = pd.DataFrame({
            "run_id": pd.array(id_array[metrics["run"].to_numpy()], dtype="str"),
            "step": metrics["step"].to_numpy(), "split": metrics["split"].array,
            "language": metrics["language"].array, "metric": metrics["metric"].array,
            "value": metrics["value"].to_numpy(),
        })

    result_rows: dict[str, list] = {c: [] for c in RESULTS_COLUMNS}
    for i, entry in enumerate(tables.runs):
        results = entry["results"]
        if results is None:
            continue
        for language, value in results["per_language"].items():
            result_rows["run_id"].append(run_ids[i])
            result_rows["metric"].append(results["metric"])
            result_rows["language"].append(language)
            result_rows["value"].append(float(value))
            result_rows["is_source"].append(language == results["source_language"])
    if result_rows["run_id"]:
        results_frame = pd.DataFrame(result_rows)
        results_frame["is_source"] = results_frame["is_source"].astype(bool)
        results_frame["value"] = results_frame["value"].astype(float)
    else:
        results_frame = _empty(RESULTS_COLUMNS)

    problems_frame = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    problems_frame["line"] = pd.array(problems_frame["line"].tolist(), dtype="Int64")
    return RunSet(runs=runs, fisher=fisher_frame, schedule=schedule, metrics=metrics_frame,
                  results=results_frame, problems=problems_frame, target_fisher=target_fisher)
