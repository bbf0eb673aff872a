"""Columnar checking of run-store JSONL records (analysis side, torch-free).

The records of every run's ``fisher.jsonl`` / ``schedule.jsonl`` / ``metrics.jsonl`` are
validated and converted column by column with numpy (:class:`_File`: one file's records;
:class:`_Chunks`: the columns of many runs), and assembled into one frame per file kind
(:data:`_KINDS`). Each repair is a problem row ``{"run", "file", "line", "reason", "action"}``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from fisherlab.runs.schema import (
    FISHER_JSONL,
    METRICS_JSONL,
    SCHEDULE_JSONL,
)

_LAYER_RE = re.compile(r"^layer\.(\d+)$")
_MAX_LINES_LISTED = 5


def _problem(run: str, file: Path | str, line: int | None, reason: str, action: str) -> dict:
    """One row of the problems table."""
    return {"run": run, "file": str(file), "line": line, "reason": reason, "action": action}


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


class _Coded(NamedTuple):
    """A text column of one file as its distinct values (text or None) and int64 codes into them.

    Small to pickle (the per-run cache stores it) and cheap to merge into a ``_Chunks`` table.
    """

    values: list
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)


# Text columns built with ``_Chunks.strings``: kept as ``_Coded`` per file.
_TEXT_COLUMNS = frozenset({"block", "estimator", "event", "strategy", "split", "language", "metric"})


def _encode(values: list) -> _Coded:
    """``["a", "b", "a"]`` -> ``_Coded(["a", "b"], [0, 1, 0])``."""
    distinct = list(dict.fromkeys(values))
    index = {v: i for i, v in enumerate(distinct)}
    return _Coded(distinct, np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values)))


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
            elif isinstance(values, _Coded):
                self.columns[name].append(values if keep.all() else _Coded(values.values, values.codes[keep]))
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
            if isinstance(chunk, _Coded):
                local = np.fromiter((table.setdefault(v, len(table)) for v in chunk.values), dtype=np.int64,
                                    count=len(chunk.values))
                parts.append(local[chunk.codes])
                continue
            for value in set(chunk) - table.keys():
                table[value] = len(table)
            parts.append(np.fromiter(map(table.__getitem__, chunk), dtype=np.int64, count=len(chunk)))
        codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        values = np.empty(len(table), dtype=object)
        for text, code in table.items():
            values[code] = text
        if codes.size and all(v is None or type(v) is str for v in table):
            try:  # decode through Arrow: no Python object per row
                import pyarrow as pa
            except ImportError:  # pragma: no cover - pandas' "str" dtype brings pyarrow
                pa = None
            if pa is not None:
                texts = pa.array(list(values), type=pa.large_string())
                return pd.array(pa.DictionaryArray.from_arrays(pa.array(codes), texts).dictionary_decode(),
                                dtype="str")
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
    language = _optional_str(_column(recs, "language"))  # None: the source (training) data
    f.dedupe(list(zip(step.tolist(), block, language, strict=True)), "(step, block) rows")  # per input set (language)
    return {"line": f.lines, "step": step, "block": block, "layer": layer, "trace": trace,
            "stderr": stderr, "trainable": trainable, "n_examples": n_examples,
            "estimator": _optional_str(_column(recs, "estimator")), "language": language}


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
        "language": c.strings("language"),
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
