"""Reading the original release files of a task: where they live and how a bad row is reported.

Data root: an explicit ``data_dir`` or ``$FISHERLAB_DATA``. Every reader names the
file and the 1-based line of a malformed row; a missing file names the path
expected and where the release can be downloaded.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fisherlab._jsonl import iter_json_objects
from fisherlab.errors import FisherlabError

logger = logging.getLogger(__name__)


class TaskDataError(FisherlabError, ValueError):
    """A task's data is missing or malformed; the message names the file (and line)."""


def data_root(data_dir: str | Path | None, task: str) -> Path:
    """``data_dir`` (or ``$FISHERLAB_DATA``) as an existing directory."""
    if data_dir is None:
        env = os.environ.get("FISHERLAB_DATA")
        if not env:
            raise TaskDataError(f"{task}: data_dir not given and $FISHERLAB_DATA is not set")
        data_dir = env
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise TaskDataError(f"{task}: data_dir {root} is not a directory")
    return root


SOURCES = ("files", "hub")


def choose_source(data_dir: str | Path | None, source: str | None, task: str) -> tuple[str, Path | None]:
    """``(source, data root)``: ``source`` is ``"files"``, ``"hub"`` or None (files when ``data_dir``
    is given or ``$FISHERLAB_DATA`` is set, else the hub); the root is None for the hub."""
    if source is None:
        source = "files" if data_dir is not None or os.environ.get("FISHERLAB_DATA") else "hub"
    if source not in SOURCES:
        raise TaskDataError(f"{task}: source {source!r} unknown; expected one of {SOURCES}")
    return source, (data_root(data_dir, task) if source == "files" else None)


def require_file(path: Path, task: str, release: str) -> Path:
    """``path`` if it is a file; otherwise an error naming it and where ``release`` comes from."""
    if not path.is_file():
        raise TaskDataError(f"{task}: expected file {path} does not exist; it is part of {release}")
    return path


def read_tsv(path: Path, task: str, columns: Sequence[str], header: bool = True) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a tab-separated release file without quoting (as XNLI and PAWS-X ship).

    With ``header`` the first line names the columns and must contain ``columns``;
    without, rows are read positionally as ``columns``. A row with the wrong number
    of fields is an error naming file and line.
    """
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        names = list(columns)
        if header:
            try:
                names = next(reader)
            except StopIteration:
                raise TaskDataError(f"{task}: {path} is empty (expected a header with {list(columns)})") from None
            missing = [c for c in columns if c not in names]
            if missing:
                raise TaskDataError(f"{task}: {path}:1 header lacks column(s) {missing} (has {names})")
        for row in reader:
            number = reader.line_num
            if not row or row == [""]:
                continue
            if len(row) != len(names):
                raise TaskDataError(f"{task}: {path}:{number} has {len(row)} tab-separated fields, "
                                    f"expected {len(names)} ({names})")
            yield number, dict(zip(names, row, strict=True))


def read_jsonl(path: Path, task: str, fields: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of a JSON Lines file; a non-JSON line or missing field names the line."""
    for number, row in iter_json_objects(path, lambda n, what: TaskDataError(f"{task}: {path}:{n} {what}")):
        missing = [f for f in fields if f not in row]
        if missing:
            raise TaskDataError(f"{task}: {path}:{number} lacks field(s) {missing}")
        yield number, row


def label_index(value: Any, labels: Sequence[str], where: str) -> int:
    """The index of label ``value`` (a name, or an int index) in ``labels``; anything else is an error."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels):
        return value  # already an index (hub ClassLabel columns)
    if isinstance(value, str) and value.strip() in labels:
        return list(labels).index(value.strip())
    raise TaskDataError(f"{where}: label {value!r} is not in the label set {list(labels)}")
