"""The run-store schema: file names, the format version and the fields of each record.

File names, the version and the field tables ``name -> (kind, required)`` shared by the
writer (required fields), the reader and the documentation (``docs/run-format.md`` must
document every field listed here; a test checks it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fisherlab.errors import FisherlabError

FORMAT_VERSION = 1
"""Current format version, written as ``"format": 1`` in ``run.json``.

Changes within a version are additive only (new optional fields, new files); a reader
ignores fields it does not know. Anything else bumps the version, and readers reject
versions they do not know with :class:`RunFormatError`.
"""

SUPPORTED_FORMATS = frozenset({1})

RUN_JSON = "run.json"
RESULTS_JSON = "results.json"
FISHER_JSONL = "fisher.jsonl"
SCHEDULE_JSONL = "schedule.jsonl"
METRICS_JSONL = "metrics.jsonl"
JSONL_FILES = (FISHER_JSONL, SCHEDULE_JSONL, METRICS_JSONL)

STATUSES = ("running", "completed", "failed")
FINISHED_STATUSES = ("completed", "failed")

# kind: "int" (integer-valued number), "float" (number, may be non-finite in the file),
# "str", "str|null", "bool|null", "list[str]", "dict", "number|null", "int|null".
FISHER_FIELDS: dict[str, tuple[str, bool]] = {
    "step": ("int", True),
    "block": ("str", True),
    "layer": ("int|null", False),
    "trace": ("float", True),
    "stderr": ("number|null", False),
    "trainable": ("bool|null", False),
    "n_examples": ("int|null", False),
    "estimator": ("str|null", False),
    "precision": ("str|null", False),
    "nonfinite": ("bool|null", False),
    "language": ("str|null", False),
}
SCHEDULE_FIELDS: dict[str, tuple[str, bool]] = {
    "step": ("int", True),
    "event": ("str", True),
    "blocks": ("list[str]", True),
    "strategy": ("str|null", False),
    "scores": ("dict", False),
}
METRICS_FIELDS: dict[str, tuple[str, bool]] = {
    "step": ("int", True),
    "split": ("str", True),
    "language": ("str|null", False),
    "metric": ("str", True),
    "value": ("float", True),
}
RESULTS_FIELDS: dict[str, tuple[str, bool]] = {
    "metric": ("str", True),
    "source_language": ("str", True),
    "per_language": ("dict", True),
}
RUN_FIELDS: dict[str, tuple[str, bool]] = {
    "format": ("int", True),
    "run_id": ("str", True),
    "created": ("str", True),
    "status": ("str", True),
    "labels": ("dict", False),
    "config": ("dict", True),
    "fisher": ("dict", False),
    "env": ("dict", False),
}

ALL_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    RUN_JSON: RUN_FIELDS,
    FISHER_JSONL: FISHER_FIELDS,
    SCHEDULE_JSONL: SCHEDULE_FIELDS,
    METRICS_JSONL: METRICS_FIELDS,
    RESULTS_JSON: RESULTS_FIELDS,
}


def required_fields(fields: dict[str, tuple[str, bool]]) -> tuple[str, ...]:
    """Names of the required fields of a field table."""
    return tuple(name for name, (_, required) in fields.items() if required)


class RunFormatError(FisherlabError, ValueError):
    """A run directory or file does not follow the run-store format (message says where)."""


class RunExistsError(FisherlabError, FileExistsError):
    """``RunWriter.create`` found a finished run in the directory and ``overwrite`` is False."""


def peek_run_json(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``run.json`` without validation, for deciding reuse/resume: None when absent, ``{}`` when unreadable."""
    try:
        return load_run_json(Path(run_dir))
    except RunFormatError:
        return {} if (Path(run_dir) / RUN_JSON).exists() else None


def load_run_json(run_dir: Path, errors: str = "strict") -> dict[str, Any]:
    """``run_dir/run.json`` as a dict; :class:`RunFormatError` when it is missing, not JSON or
    not an object. ``errors`` is the UTF-8 decoding policy (the reader passes ``"replace"``)."""
    path = Path(run_dir) / RUN_JSON
    try:
        info = json.loads(path.read_bytes().decode("utf-8", errors=errors))
    except FileNotFoundError:
        raise RunFormatError(f"{path}: not a run directory (no {RUN_JSON})") from None
    except json.JSONDecodeError as err:
        raise RunFormatError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(info, dict):
        raise RunFormatError(f"{path}: expected a JSON object, got {type(info).__name__}")
    return info
