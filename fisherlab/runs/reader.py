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
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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

_LAYER_RE = re.compile(r"^layer\.(\d+)$")
_MAX_LINES_LISTED = 5


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


# ------------------------------------------------------------------------- JSON decoding
def _problem(run: str, file: Path | str, line: int | None, reason: str, action: str) -> dict:
    return {"run": run, "file": str(file), "line": line, "reason": reason, "action": action}


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


# ---------------------------------------------------------------------- column checking
_NUMBER_TYPES = frozenset({int, float})


def _column(records: list[dict], key: str) -> list:
    try:
        return list(map(itemgetter(key), records))
    except KeyError:
        return [r.get(key) for r in records]


def _numeric(values: list) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and a mask of entries that are not JSON numbers (booleans excluded)."""
    if set(map(type, values)) <= _NUMBER_TYPES:
        return np.asarray(values, dtype=np.float64), np.zeros(len(values), dtype=bool)
    is_number = np.fromiter((type(v) is float or type(v) is int for v in values), dtype=bool,
                            count=len(values))
    out = np.full(len(values), np.nan)
    idx = np.flatnonzero(is_number)
    out[idx] = np.asarray([values[i] for i in idx], dtype=np.float64)
    return out, ~is_number


def _not_str(values: list) -> np.ndarray:
    if set(map(type, values)) == {str}:
        return np.zeros(len(values), dtype=bool)
    return np.fromiter((type(v) is not str for v in values), dtype=bool, count=len(values))


def _optional_str(values: list) -> list:
    if set(map(type, values)) <= {str, type(None)}:
        return values
    return [v if type(v) is str else None for v in values]


def _steps(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    step, not_num = _numeric(_column(records, "step"))
    with np.errstate(invalid="ignore"):
        bad = not_num | ~np.isfinite(step) | (step != np.round(step)) | (step < 0)
    return step, bad


class _File:
    """Checks the records of one JSONL file and reports bad rows once per reason."""

    def __init__(self, records: list[dict], lines: Sequence[int], run: str, path: Path,
                 problems: list[dict]):
        self.records, self.run, self.path, self.problems = records, run, path, problems
        self.lines = np.asarray(lines, dtype=np.int64)
        self.keep = np.ones(len(records), dtype=bool)

    def report(self, mask: np.ndarray, reason: str, action: str) -> None:
        hit = self.lines[mask]
        if not hit.size:
            return
        listed = ", ".join(map(str, hit[:_MAX_LINES_LISTED].tolist()))
        more = ", ..." if hit.size > _MAX_LINES_LISTED else ""
        rows = f"{hit.size} row{'s' if hit.size > 1 else ''}"
        self.problems.append(_problem(self.run, self.path, int(hit[0]),
                                      f"{reason} ({rows}: line {listed}{more})", action))

    def require(self, bad: np.ndarray, reason: str) -> None:
        """Drop rows failing a check (each dropped row is reported under its first failure)."""
        if bad.any():
            self.report(bad & self.keep, reason, "dropped row")
            self.keep &= ~bad

    def optional_numeric(self, key: str) -> np.ndarray:
        values = _column(self.records, key)
        out, not_num = _numeric(values)
        if not_num.any():
            present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
            self.report(not_num & present & self.keep, f"'{key}' is not a number", "repaired (set to missing)")
        return out

    def dedupe(self, keys: list[tuple], what: str) -> None:
        """Of rows sharing a key, keep the last one (file order); report the others."""
        if len(set(keys)) == len(keys):
            return
        last: dict[tuple, int] = {}
        for i, key in enumerate(keys):
            if self.keep[i]:
                last[key] = i
        dup = self.keep.copy()
        dup[list(last.values())] = False
        if dup.any():
            self.report(dup, f"duplicated {what}", "deduplicated (kept the last)")
            self.keep &= ~dup


class _Chunks:
    """Column chunks of one JSONL kind from many runs, concatenated once at the end."""

    def __init__(self):
        self.columns: dict[str, list] = defaultdict(list)
        self.codes: dict[str, dict[str, int]] = defaultdict(dict)

    def add(self, run: int, columns: dict[str, Any], keep: np.ndarray) -> None:
        n = int(keep.sum())
        if not n:
            return
        self.columns["run"].append(np.full(n, run, dtype=np.int64))
        for name, values in columns.items():
            if isinstance(values, np.ndarray):
                self.columns[name].append(values[keep])
            else:
                self.columns[name].append([v for v, k in zip(values, keep, strict=True) if k] if not keep.all()
                                          else values)

    def array(self, name: str, dtype=None) -> np.ndarray:
        chunks = self.columns.get(name, [])
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype or np.float64)

    def strings(self, name: str) -> pd.arrays.ArrowStringArray | Any:
        """A text column, built from integer codes (repeated names are converted once)."""
        table = self.codes[name]
        parts = []
        for chunk in self.columns.get(name, []):
            for value in set(chunk) - table.keys():
                table[value] = len(table)
            parts.append(np.fromiter(map(table.__getitem__, chunk), dtype=np.int64, count=len(chunk)))
        codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        values = np.empty(len(table), dtype=object)
        for text, code in table.items():
            values[code] = text
        return pd.array(values[codes] if codes.size else np.zeros(0, dtype=object), dtype="str")

    def objects(self, name: str) -> list:
        return [v for chunk in self.columns.get(name, []) for v in chunk]


def _masked(values: np.ndarray, kind: str):
    mask = np.isnan(values)
    if kind == "Int64":
        return pd.arrays.IntegerArray(np.where(mask, 0, values).astype(np.int64), mask)
    return pd.arrays.BooleanArray(np.where(mask, 0, values).astype(bool), mask)


def _fisher_file(f: _File) -> dict[str, Any]:
    recs = f.records
    step, bad_step = _steps(recs)
    block = _column(recs, "block")
    trace, trace_not_num = _numeric(_column(recs, "trace"))
    f.require(bad_step, "missing or invalid 'step' (expected an integer >= 0)")
    f.require(_not_str(block), "missing or invalid 'block' (expected text)")
    f.require(trace_not_num, "missing or non-numeric 'trace'")
    f.require(~trace_not_num & ~np.isfinite(trace), "non-finite 'trace' (NaN or infinity)")
    stderr = f.optional_numeric("stderr")
    n_examples = f.optional_numeric("n_examples")
    layer_raw = _column(recs, "layer")
    layer, layer_not_num = _numeric(layer_raw)
    for i in np.flatnonzero(layer_not_num):  # layer absent: recover it from the block name
        match = _LAYER_RE.match(block[i]) if type(block[i]) is str else None
        if match and layer_raw[i] is None:
            layer[i] = float(match.group(1))
    flags = _column(recs, "trainable")
    kinds = set(map(type, flags))
    if kinds <= {bool}:
        trainable = np.asarray(flags, dtype=np.float64)
    else:
        trainable = np.array([float(v) if type(v) is bool else np.nan for v in flags])
        bad_flag = np.fromiter((v is not None and type(v) is not bool for v in flags), dtype=bool,
                               count=len(flags))
        f.report(bad_flag & f.keep, "'trainable' is not true/false", "repaired (set to missing)")
    f.dedupe(list(zip(step.tolist(), block, strict=True)), "(step, block) rows")
    return {"line": f.lines, "step": step, "block": block, "layer": layer, "trace": trace,
            "stderr": stderr, "trainable": trainable, "n_examples": n_examples,
            "estimator": _optional_str(_column(recs, "estimator"))}


def _schedule_file(f: _File) -> dict[str, Any]:
    recs = f.records
    step, bad_step = _steps(recs)
    event, blocks = _column(recs, "event"), _column(recs, "blocks")
    bad_blocks = np.fromiter(
        (type(b) is not list or not all(type(x) is str for x in b) for b in blocks), dtype=bool,
        count=len(blocks))
    f.require(bad_step, "missing or invalid 'step' (expected an integer >= 0)")
    f.require(_not_str(event), "missing or invalid 'event' (expected text)")
    f.require(bad_blocks, "missing or invalid 'blocks' (expected a list of block names)")
    keys = [(s, e, tuple(b) if type(b) is list else None) for s, e, b in zip(step.tolist(), event, blocks, strict=True)]
    f.dedupe(keys, "schedule events")
    scores = [v if type(v) is dict else {} for v in _column(recs, "scores")]
    return {"line": f.lines, "step": step, "event": event, "blocks": blocks,
            "strategy": _optional_str(_column(recs, "strategy")), "scores": scores}


def _metrics_file(f: _File) -> dict[str, Any]:
    recs = f.records
    step, bad_step = _steps(recs)
    split, metric = _column(recs, "split"), _column(recs, "metric")
    value, value_not_num = _numeric(_column(recs, "value"))
    language = _optional_str(_column(recs, "language"))
    f.require(bad_step, "missing or invalid 'step' (expected an integer >= 0)")
    f.require(_not_str(split), "missing or invalid 'split' (expected text)")
    f.require(_not_str(metric), "missing or invalid 'metric' (expected text)")
    f.require(value_not_num, "missing or non-numeric 'value'")
    f.require(~value_not_num & ~np.isfinite(value), "non-finite 'value' (NaN or infinity)")
    f.dedupe(list(zip(step.tolist(), split, language, metric, strict=True)), "(step, split, language, metric) rows")
    return {"line": f.lines, "step": step, "split": split, "language": language, "metric": metric,
            "value": value}


def _fisher_frame(c: _Chunks) -> pd.DataFrame:
    return pd.DataFrame({
        "run": c.array("run", np.int64), "line": c.array("line", np.int64),
        "step": c.array("step").astype(np.int64), "block": c.strings("block"),
        "layer": _masked(c.array("layer"), "Int64"), "trace": c.array("trace"),
        "stderr": c.array("stderr"), "trainable": _masked(c.array("trainable"), "boolean"),
        "n_examples": _masked(c.array("n_examples"), "Int64"), "estimator": c.strings("estimator"),
    })


def _schedule_frame(c: _Chunks) -> pd.DataFrame:
    frame = pd.DataFrame({
        "run": c.array("run", np.int64), "line": c.array("line", np.int64),
        "step": c.array("step").astype(np.int64), "event": c.strings("event"),
        "blocks": pd.Series(c.objects("blocks"), dtype=object),
        "strategy": c.strings("strategy"), "scores": pd.Series(c.objects("scores"), dtype=object),
    })
    return frame


def _metrics_frame(c: _Chunks) -> pd.DataFrame:
    return pd.DataFrame({
        "run": c.array("run", np.int64), "line": c.array("line", np.int64),
        "step": c.array("step").astype(np.int64), "split": c.strings("split"),
        "language": c.strings("language"), "metric": c.strings("metric"), "value": c.array("value"),
    })


_KINDS = {
    FISHER_JSONL: (_fisher_file, _fisher_frame),
    SCHEDULE_JSONL: (_schedule_file, _schedule_frame),
    METRICS_JSONL: (_metrics_file, _metrics_frame),
}


# ------------------------------------------------------------------------------ public
def read_runs(run_dirs: Iterable[str | os.PathLike], progress: bool = False,
              infos: Sequence[tuple[dict, list[dict]] | None] | None = None) -> StoreTables:
    """Read many run directories; unreadable runs are skipped and listed in ``problems``.

    ``infos`` (optional, aligned with ``run_dirs``) are pre-read ``read_run_info`` results
    (``None`` for a run to skip silently because the caller already reported it).
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
        label = info["run_id"]
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
                chunks[name].add(index, columns, checked.keep)
        results = _read_results(run_dir, label, problems)
        runs.append({"path": run_dir, "info": info, "results": results})
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
