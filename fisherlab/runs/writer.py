"""Training-side writer of one run directory (see ``docs/run-format.md``).

JSONL records are appended one line at a time and flushed, so a crash loses at most the
line being written (the reader reports and drops a truncated last line). JSON documents
(``run.json``, ``results.json``) are replaced atomically: written to a temporary file in
the same directory, flushed, fsynced and moved over the target with ``os.replace``.
Never imports torch: tensors and numpy scalars are converted with ``.item()``/``.tolist()``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fisherlab.runs.labels import labels_from_config, validate_labels
from fisherlab.runs.schema import (
    FINISHED_STATUSES,
    FISHER_FIELDS,
    FISHER_JSONL,
    FORMAT_VERSION,
    JSONL_FILES,
    METRICS_JSONL,
    RESULTS_JSON,
    RUN_JSON,
    SCHEDULE_JSONL,
    RunExistsError,
    RunFormatError,
    load_run_json,
    required_fields,
)

__all__ = ["RunWriter", "atomic_write_json", "utc_now"]


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with seconds (``2026-01-31T12:00:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_jsonable(value: Any) -> Any:
    """``json.dumps`` fallback: numpy/torch scalars and arrays, paths, sets, tuples."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot write a value of type {type(value).__name__} to the run store: {value!r}")


def _dumps(record: Any) -> str:
    # allow_nan: a diverged trace is an observation; it is written as NaN/Infinity
    # (Python's JSON dialect) and the reader drops and reports such rows.
    return json.dumps(record, default=_to_jsonable, allow_nan=True, ensure_ascii=False)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, flushed,
    fsynced (unless ``fsync=False``), given ``mode`` if set, then moved over ``path`` with
    ``os.replace`` -- a reader sees the old or the new file, never a partial one. The one
    atomic write of the run store, its truncation on resume, the load cache and the sweep."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, document: Any, fsync: bool = True) -> None:
    """Write ``document`` as JSON to ``path`` atomically (:func:`atomic_write_bytes`).

    ``fsync=False`` skips the fsync: still atomic for readers and against a crashed
    process, but not durable across a power loss (for synthetic or throw-away stores)."""
    text = json.dumps(document, default=_to_jsonable, indent=1, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def _read_run_json(run_dir: Path) -> dict:
    path = run_dir / RUN_JSON
    info = load_run_json(run_dir)
    fmt = info.get("format")
    if fmt != FORMAT_VERSION:
        raise RunFormatError(
            f"{path}: format version {fmt!r} is not supported by this writer (expected {FORMAT_VERSION})"
        )
    return info


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, float)) and not hasattr(step, "item"):
        raise TypeError(f"step must be an integer, got {step!r}")
    value = step.item() if hasattr(step, "item") else step
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"step must be an integer, got {step!r}")
        value = int(value)
    if value < 0:
        raise ValueError(f"step must be >= 0, got {value}")
    return int(value)


class RunWriter:
    """Writes one run directory: ``run.json``, three JSONL logs and ``results.json``.

    Use :meth:`create` for a new run and :meth:`resume` to continue one from a checkpoint.
    Usable as a context manager: leaving the block by an exception finishes the run as
    ``failed`` with the error message, otherwise as ``completed`` (unless already finished).
    Only one process should write a run (rank 0 under DDP).
    """

    def __init__(self, run_dir: Path, info: dict, fsync: bool = True):
        self.path = Path(run_dir)
        self.info = info
        self.fsync = fsync

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any],
        fisher: Mapping[str, Any] | None = None,
        labels: Mapping[str, Any] | None = None,
        env: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        overwrite: bool = False,
        created: str | None = None,
        fsync: bool = True,
    ) -> RunWriter:
        """Start a new run in ``run_dir`` (created if needed) with status ``running``.

        ``run_id`` defaults to the directory name. A finished run (``completed``/``failed``)
        already in ``run_dir`` raises :class:`RunExistsError` unless ``overwrite``; an
        unfinished one (a crashed run) is replaced with a warning (use :meth:`resume` to
        continue it instead). Replacing removes the old JSONL logs and ``results.json``.
        ``created`` overrides the creation time (reproducible synthetic stores); ``fsync=False``
        skips fsyncing JSON documents (atomic but not power-loss durable; for throw-away stores).

        ``labels``: what the run is (``fisherlab.runs.labels.LABEL_FIELDS``: method, strategy,
        seed, model, task, task_module, regulariser and its weight, estimator), validated here
        (:class:`RunFormatError` names the missing or ill-typed label). ``None`` derives them from
        ``config``/``fisher``/``env`` (``labels_from_config``; method ``(unlabelled)`` when the
        config names none) -- ``fisherlab train`` always passes them.
        """
        run_dir = Path(run_dir)
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        labels = validate_labels(labels if labels is not None else labels_from_config(config, fisher, env),
                                 f"{run_dir}: labels")
        existing = run_dir / RUN_JSON
        if existing.exists():
            try:
                status = json.loads(existing.read_text(encoding="utf-8")).get("status")
            except (json.JSONDecodeError, AttributeError):
                status = None
            if status in FINISHED_STATUSES and not overwrite:
                raise RunExistsError(
                    f"{run_dir}: holds a finished run (status {status!r}); pass overwrite=True "
                    "to replace it or choose another directory"
                )
            if status not in FINISHED_STATUSES and not overwrite:
                warnings.warn(
                    f"{run_dir}: replacing an unfinished run (status {status!r}); use "
                    "RunWriter.resume(run_dir, from_step) to continue it instead",
                    stacklevel=2,
                )
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (*JSONL_FILES, RESULTS_JSON):
            (run_dir / name).unlink(missing_ok=True)
        for name in JSONL_FILES:
            (run_dir / name).touch()
        info = {
            "format": FORMAT_VERSION,
            "run_id": str(run_id) if run_id is not None else run_dir.resolve().name,
            "created": created or utc_now(),
            "status": "running",
            "labels": labels,
            "config": dict(config),
            "fisher": dict(fisher) if fisher is not None else {},
            "env": dict(env) if env is not None else {},
        }
        writer = cls(run_dir, info, fsync=fsync)
        writer._save_info()
        return writer

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, from_step: int) -> RunWriter:
        """Reopen a run to continue training after ``from_step`` (the checkpoint's step).

        Every JSONL log is rewritten atomically keeping only well-formed records with
        ``step <= from_step`` (a truncated or malformed line is dropped too). A stale
        ``results.json`` is removed, the status goes back to ``running`` and the resume is
        recorded in ``run.json["resumes"]`` with how many lines were dropped per file.
        """
        run_dir = Path(run_dir)
        from_step = _check_step(from_step)
        info = _read_run_json(run_dir)
        dropped: dict[str, int] = {}
        for name in JSONL_FILES:
            dropped[name] = _truncate_jsonl(run_dir / name, from_step)
        results = run_dir / RESULTS_JSON
        had_results = results.exists()
        results.unlink(missing_ok=True)
        info["status"] = "running"
        info.pop("finished", None)
        info.pop("error", None)
        info.setdefault("resumes", []).append(
            {"from_step": from_step, "time": utc_now(), "dropped_lines": dropped,
             "results_removed": had_results}
        )
        writer = cls(run_dir, info)
        writer._save_info()
        return writer

    # -- properties ---------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.info["run_id"]

    @property
    def status(self) -> str:
        return self.info["status"]

    # -- logging ------------------------------------------------------------------------
    def _append(self, name: str, records: Iterable[Mapping[str, Any]]) -> int:
        lines = [_dumps(record) + "\n" for record in records]
        if not lines:
            return 0
        with open(self.path / name, "a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()
        return len(lines)

    def log_fisher(self, rows: Iterable[Mapping[str, Any]], step: int) -> int:
        """Append per-block tr(F) records (``FisherMeasurement.to_records()``) at ``step``.

        Each row needs ``block`` and ``trace``; ``layer``, ``stderr``, ``trainable``,
        ``n_examples`` and ``estimator`` are optional. Returns the number of rows written.
        """
        step = _check_step(step)
        records = []
        for row in rows:
            if not isinstance(row, Mapping):
                raise TypeError(f"fisher rows must be mappings, got {type(row).__name__}")
            missing = [key for key in required_fields(FISHER_FIELDS) if key != "step" and key not in row]
            if missing:
                raise ValueError(f"fisher row at step {step} lacks {missing}: {dict(row)!r}")
            record = {"step": step}
            record.update((k, v) for k, v in row.items() if k != "step")
            records.append(record)
        return self._append(FISHER_JSONL, records)

    def log_schedule(
        self,
        step: int,
        blocks: Iterable[str],
        strategy: str,
        scores: Mapping[str, float] | None = None,
        event: str = "unfreeze",
    ) -> None:
        """Append one schedule event: ``blocks`` (block names, in the order chosen) at ``step``."""
        if isinstance(blocks, str):
            raise TypeError(f"blocks must be a list of block names, got the string {blocks!r}")
        blocks = list(blocks)
        if not all(isinstance(b, str) for b in blocks):
            raise TypeError(f"blocks must be a list of block names, got {blocks!r}")
        record = {"step": _check_step(step), "event": str(event), "blocks": blocks,
                  "strategy": strategy, "scores": dict(scores) if scores is not None else {}}
        self._append(SCHEDULE_JSONL, [record])

    def log_metric(
        self, step: int, split: str, language: str | None, metric: str, value: float
    ) -> None:
        """Append one evaluation value (e.g. validation accuracy in ``en`` at ``step``)."""
        record = {"step": _check_step(step), "split": str(split), "language": language,
                  "metric": str(metric), "value": value}
        self._append(METRICS_JSONL, [record])

    def write_results(
        self, metric: str, source_language: str, per_language: Mapping[str, float], **extra: Any
    ) -> None:
        """Write the final zero-shot results atomically (replaces an earlier ``results.json``).

        ``per_language`` maps language code to score (in the metric's reporting unit, e.g.
        accuracy in percent); ``extra`` fields are stored alongside (e.g. ``split="test"``).
        """
        if not isinstance(per_language, Mapping) or not per_language:
            raise ValueError("per_language must be a non-empty mapping language -> score")
        scores = {}
        for language, score in per_language.items():
            value = score.item() if hasattr(score, "item") else score
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"per_language[{language!r}] must be a number, got {score!r}")
            scores[str(language)] = float(value)
        reserved = {"metric", "source_language", "per_language"} & set(extra)
        if reserved:
            raise ValueError(f"extra fields may not redefine {sorted(reserved)}")
        document = {"metric": str(metric), "source_language": str(source_language),
                    "per_language": scores, **extra}
        atomic_write_json(self.path / RESULTS_JSON, document, fsync=self.fsync)

    def update_info(self, **fields: Any) -> None:
        """Add or replace top-level ``run.json`` fields (additive metadata), atomically."""
        protected = {"format", "run_id", "created"} & set(fields)
        if protected:
            raise ValueError(f"cannot change {sorted(protected)} of an existing run")
        self.info.update(fields)
        self._save_info()

    def finish(self, status: str = "completed", error: str | None = None, finished: str | None = None) -> None:
        """Mark the run ``completed`` or ``failed`` (with ``error``) and stamp ``finished``
        (now, or the given ISO 8601 time)."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {FINISHED_STATUSES}, got {status!r}")
        self.info["status"] = status
        self.info["finished"] = finished or utc_now()
        if error is not None:
            self.info["error"] = str(error)
        self._save_info()

    def _save_info(self) -> None:
        atomic_write_json(self.path / RUN_JSON, self.info, fsync=self.fsync)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.finish("failed", error=f"{exc_type.__name__}: {exc}")
        elif self.info["status"] == "running":
            self.finish("completed")

    def __repr__(self) -> str:
        return f"RunWriter({str(self.path)!r}, run_id={self.run_id!r}, status={self.status!r})"


def _truncate_jsonl(path: Path, from_step: int) -> int:
    """Keep well-formed records with ``step <= from_step``; returns the number of lines dropped."""
    if not path.exists():
        path.touch()
        return 0
    kept: list[str] = []
    dropped = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            stripped = line.strip()
            if not stripped:
                continue
            try:
                record = json.loads(stripped)
                step = record["step"]
                keep = (not isinstance(step, bool) and isinstance(step, (int, float))
                        and math.isfinite(step) and step <= from_step)
            except (json.JSONDecodeError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(stripped + "\n")
            else:
                dropped += 1
    atomic_write_bytes(path, "".join(kept).encode("utf-8"))
    return dropped
