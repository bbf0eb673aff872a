"""One JSON Lines reader for input files a user hands us (task data, ``fisherlab fisher --data``).

Torch-free. The run store has its own lenient reader (``fisherlab.runs``), which reports bad
lines instead of failing; this one fails on the first bad line, naming it, because a malformed
input file must never train silently on part of its data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def iter_json_objects(path: Path, fail: Callable[[int, str], Exception]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``path`` (1-based numbers).

    ``fail(number, what)`` builds the exception raised for a line that is not JSON or not a
    JSON object (``what`` is e.g. ``"is not JSON (Expecting value)"``); the caller words it.
    """
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise fail(number, f"is not JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise fail(number, "is not a JSON object")
            yield number, row
