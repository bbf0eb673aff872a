"""Analysis-side reader of run directories (see ``docs/run-format.md``).

The reader is tolerant where a crash or a resumed run can leave debris and strict where
the data would be misread: a truncated last line, malformed lines, rows with a missing
or non-finite value and duplicated rows are dropped (duplicates: the last one is kept),
and each such repair is listed in ``problems`` as
``{"run", "file", "line", "reason", "action"}``. An unknown format version raises
:class:`RunFormatError` (``read_runs`` lists the run as skipped instead).

Many runs are parsed together (:func:`read_runs`): each JSONL file is decoded with one
``json.loads`` call (lines joined into an array; per-line fallback when that fails) and
the columns of all runs are validated and converted with numpy in one pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fisherlab.runs.columns import _KINDS, _TEXT_COLUMNS, _Chunks, _encode, _File, _problem
from fisherlab.runs.schema import (
    FISHER_JSONL,
    METRICS_JSONL,
    RESULTS_JSON,
    RUN_JSON,
    SCHEDULE_JSONL,
    STATUSES,
    SUPPORTED_FORMATS,
    RunFormatError,
    load_run_json,
)

__all__ = ["Run", "StoreTables", "read_run", "read_runs", "find_run_dirs", "read_run_info"]


@dataclass
class Run:
    """One run directory, read: ``info`` is run.json; frames have one row per record."""

    path: Path
    info: dict
    fisher: pd.DataFrame
    schedule: pd.DataFrame
    metrics: pd.DataFrame
    results: dict | None
    problems: list[dict] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.info["run_id"]

    @property
    def status(self) -> str:
        return self.info.get("status", "unknown")

    @property
    def config(self) -> dict:
        return self.info.get("config", {})


@dataclass
class StoreTables:
    """Several runs read together. Frames carry a ``run`` column: the index into ``runs``."""

    runs: list[dict]  # {"path", "info", "results"} per run that was read
    fisher: pd.DataFrame
    schedule: pd.DataFrame
    metrics: pd.DataFrame
    problems: list[dict]


# ----------------------------------------------------------------------------- discovery
def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """Run directories at or below ``path`` (any depth; a run dir is one holding run.json).

    ``path`` may be a run directory, a parent of many, or a ``run.json`` file. The search
    does not descend into a run directory. Sorted, so the result is deterministic.
    """
    path = Path(path)
    if path.is_file():
        return [path.parent] if path.name == RUN_JSON else []
    if not path.is_dir():
        return []
    found: list[Path] = []
    for root, dirs, files in os.walk(path, followlinks=False):
        if RUN_JSON in files:
            found.append(Path(root))
            dirs[:] = []
        else:
            dirs.sort()
    return sorted(found, key=lambda p: str(p))


def _read_jsonl(path: Path, run: str, problems: list[dict]) -> tuple[list, Sequence[int]]:
    """Records of one JSONL file and their 1-based line numbers; bad lines reported."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    if not data:
        return [], []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        text = data.decode("utf-8", errors="replace")
        problems.append(_problem(run, path, text.count("\n", 0, err.start) + 1,
                                 f"invalid UTF-8 ({err.reason})", "repaired (bad bytes replaced by U+FFFD)"))
    lines = text.split("\n")
    complete_tail = text.endswith("\n")
    if complete_tail:
        lines.pop()
    if "" not in lines:  # fast path: one decode per file (whitespace-only lines fail it)
        try:
            records = json.loads("[" + ",".join(lines) + "]")
        except json.JSONDecodeError:
            records = None
        if records is not None and len(records) == len(lines) and set(map(type, records)) == {dict}:
            return records, range(1, len(lines) + 1)
    records, numbers = [], []
    last = len(lines)
    for number, line in enumerate(lines, start=1):
        if not line or line.isspace():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == last and not complete_tail:
                problems.append(_problem(run, path, number, "truncated last line (no newline, invalid JSON)",
                                         "dropped line"))
            else:
                problems.append(_problem(run, path, number, f"invalid JSON ({err.msg})", "dropped line"))
            continue
        if type(record) is not dict:
            problems.append(_problem(run, path, number,
                                     f"expected a JSON object, got {type(record).__name__}", "dropped line"))
            continue
        records.append(record)
        numbers.append(number)
    return records, numbers


def read_run_info(run_dir: str | os.PathLike) -> tuple[dict, list[dict]]:
    """``run.json`` of ``run_dir``, validated and repaired, with the problems found.

    Raises :class:`RunFormatError` when run.json is missing, is not a JSON object or
    declares a format version this reader does not support.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_JSON
    label = str(run_dir)
    problems: list[dict] = []
    info = load_run_json(run_dir, errors="replace")
    fmt = info.get("format")
    if fmt is None:
        problems.append(_problem(label, path, None, "no 'format' field", "repaired (assumed format 1)"))
        info["format"] = 1
    elif isinstance(fmt, bool) or fmt not in SUPPORTED_FORMATS:
        raise RunFormatError(
            f"{path}: unknown run format version {fmt!r} (this fisherlab reads versions "
            f"{sorted(SUPPORTED_FORMATS)}); upgrade fisherlab to read it"
        )
    run_id = info.get("run_id")
    if run_id is None or (isinstance(run_id, str) and not run_id.strip()):
        info["run_id"] = run_dir.name
        problems.append(_problem(run_dir.name, path, None, "no 'run_id'",
                                 "repaired (run_id = directory name)"))
    elif not isinstance(run_id, str):
        info["run_id"] = str(run_id)
        problems.append(_problem(str(run_id), path, None,
                                 f"'run_id' is a {type(run_id).__name__}", "repaired (converted to text)"))
    label = info["run_id"]
    if info.get("status") not in STATUSES:
        problems.append(_problem(label, path, None, f"unknown status {info.get('status')!r}",
                                 "repaired (status = 'unknown')"))
        info["status"] = "unknown"
    for key in ("config", "fisher", "env"):
        value = info.get(key)
        if value is None:
            if key == "config":
                problems.append(_problem(label, path, None, "no 'config'", "repaired (empty config)"))
            info[key] = {}
        elif not isinstance(value, dict):
            problems.append(_problem(label, path, None, f"'{key}' is not an object", f"repaired (empty {key})"))
            info[key] = {}
    return info, problems


def _read_results(run_dir: Path, run: str, problems: list[dict]) -> dict | None:
    path = run_dir / RESULTS_JSON
    try:
        document = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    except FileNotFoundError:
        problems.append(_problem(run, path, None, "no results.json",
                                 "kept run without results (absent from result tables)"))
        return None
    except json.JSONDecodeError as err:
        problems.append(_problem(run, path, None, f"invalid JSON ({err.msg})",
                                 "ignored results (absent from result tables)"))
        return None
    except OSError as err:
        problems.append(_problem(run, path, None, f"unreadable ({err})",
                                 "ignored results (absent from result tables)"))
        return None
    reason = None
    if not isinstance(document, dict):
        reason = "not a JSON object"
    elif not isinstance(document.get("per_language"), dict) or not document["per_language"]:
        reason = "'per_language' missing or not a non-empty object"
    elif not isinstance(document.get("metric"), str) or not isinstance(document.get("source_language"), str):
        reason = "'metric' or 'source_language' missing or not text"
    if reason:
        problems.append(_problem(run, path, None, reason, "ignored results (absent from result tables)"))
        return None
    scores = {}
    for language, value in document["per_language"].items():
        if type(value) in (int, float) and np.isfinite(value):
            scores[str(language)] = float(value)
        else:
            problems.append(_problem(run, path, None, f"score for {language!r} is {value!r}, not a finite number",
                                     "dropped language"))
    if not scores:
        problems.append(_problem(run, path, None, "no finite scores", "ignored results (absent from result tables)"))
        return None
    document = dict(document)
    document["per_language"] = scores
    return document


# ------------------------------------------------------------------------------ public
def _read_files(run_dir: Path, label: str) -> dict:
    """What one run's data files hold: kept column chunks per JSONL kind, results, problems.

    This is the unit :mod:`fisherlab.runs.cache` stores per run: ``{"columns": {kind:
    (n_rows, columns)}, "results": dict | None, "problems": [...]}``.
    """
    problems: list[dict] = []
    columns_of: dict[str, tuple[int, dict]] = {}
    for name, (parse, _) in _KINDS.items():
        path = run_dir / name
        try:
            records, lines = _read_jsonl(path, label, problems)
        except OSError as err:
            problems.append(_problem(label, path, None, f"unreadable ({err})", "ignored file"))
            continue
        if records:
            checked = _File(records, lines, label, path, problems)
            columns = parse(checked)
            keep = checked.keep
            n = int(keep.sum())
            if n:
                if not keep.all():
                    columns = {k: v[keep] if isinstance(v, np.ndarray) else
                               [x for x, kept in zip(v, keep, strict=True) if kept] for k, v in columns.items()}
                columns_of[name] = (n, {k: _encode(v) if k in _TEXT_COLUMNS else v for k, v in columns.items()})
    results = _read_results(run_dir, label, problems)
    return {"columns": columns_of, "results": results, "problems": problems}


def read_runs(run_dirs: Iterable[str | os.PathLike], progress: bool = False,
              infos: Sequence[tuple[dict, list[dict]] | None] | None = None,
              files: Sequence[dict | None] | None = None, read: list | None = None) -> StoreTables:
    """Read many run directories; unreadable runs are skipped and listed in ``problems``.

    ``infos`` (optional, aligned with ``run_dirs``) are pre-read ``read_run_info`` results
    (``None`` for a run to skip silently because the caller already reported it).
    ``files`` (optional, aligned) are cached :func:`_read_files` results to use instead of
    reading the data files (``None``: read them); ``read`` (optional list) receives
    ``(i, files_result)`` for every run whose data files were read here (what a cache stores).
    """
    run_dirs = [Path(p) for p in run_dirs]
    problems: list[dict] = []
    runs: list[dict] = []
    chunks = {name: _Chunks() for name in _KINDS}
    iterator: Iterable[int] = range(len(run_dirs))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="reading runs", unit="run")
    for i in iterator:
        run_dir = run_dirs[i]
        if infos is not None:
            if infos[i] is None:
                continue
            info, info_problems = infos[i]
        else:
            try:
                info, info_problems = read_run_info(run_dir)
            except (RunFormatError, OSError) as err:
                problems.append(_problem(str(run_dir), run_dir / RUN_JSON, None, str(err), "skipped run"))
                continue
        problems.extend(info_problems)
        index = len(runs)
        found = files[i] if files is not None else None
        if found is None:
            found = _read_files(run_dir, info["run_id"])
            if read is not None:
                read.append((i, found))
        problems.extend(found["problems"])
        for name, (n, columns) in found["columns"].items():
            chunks[name].add(index, columns, np.ones(n, dtype=bool))
        runs.append({"path": run_dir, "info": info, "results": found["results"]})
    frames = {name: build(chunks[name]) for name, (_, build) in _KINDS.items()}
    return StoreTables(runs=runs, fisher=frames[FISHER_JSONL], schedule=frames[SCHEDULE_JSONL],
                       metrics=frames[METRICS_JSONL], problems=problems)


def read_run(path: str | os.PathLike) -> Run:
    """Read one run directory (or its run.json). Raises :class:`RunFormatError` if unreadable."""
    path = Path(path)
    run_dir = path.parent if path.name == RUN_JSON and path.is_file() else path
    read_run_info(run_dir)  # raises a clear RunFormatError before anything else
    tables = read_runs([run_dir])
    if not tables.runs:  # pragma: no cover - read_run_info raised already
        raise RunFormatError(tables.problems[-1]["reason"])
    entry = tables.runs[0]

    def strip(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.drop(columns=["run"]).reset_index(drop=True)

    return Run(path=run_dir, info=entry["info"], fisher=strip(tables.fisher),
               schedule=strip(tables.schedule), metrics=strip(tables.metrics),
               results=entry["results"], problems=tables.problems)
