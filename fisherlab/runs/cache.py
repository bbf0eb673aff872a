"""Per-run cache of what the reader parsed: re-reading unchanged runs skips JSON parsing.

``load_runs`` (``fisherlab.analysis``) reads a run once and stores what the reader made of
it -- run.json (validated), the column chunks of its JSONL files, results.json and every
problem met -- in one pickle per run. A later read of the same run uses the pickle when its
key still matches: size, modification time (ns) and inode of each of the run's files
(run.json, fisher.jsonl, schedule.jsonl, metrics.jsonl, results.json; absence counts) and
the reader's version (:data:`CACHE_FORMAT` plus a digest of the reader's source and the
numpy/pandas versions). A changed file changes the key of its run only.

Where the pickles live (``location``):

* ``None`` (default): ``RUN_DIR/.fisherlab-cache.pkl`` beside each run's files; where the run
  directory cannot be written (a read-only store), the user cache directory
  (:func:`user_cache_dir`, one file per run named by a digest of its resolved path)
  instead; where that fails too, nothing is cached (silently).
* a directory: every run's pickle goes there (named by the digest of its resolved path).

A pickle that cannot be read or does not hold what is expected is ignored (a row of
``RunSet.problems`` says so) and written anew. Pickles run code when loaded: load caches
only from stores you trust, or pass ``cache=False``. Never imports torch.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fisherlab.runs.schema import (
    FISHER_JSONL,
    METRICS_JSONL,
    RESULTS_JSON,
    RUN_JSON,
    SCHEDULE_JSONL,
)
from fisherlab.runs.writer import atomic_write_bytes

__all__ = ["CACHE_FILE", "CACHE_FORMAT", "RunCache", "reader_version", "run_key", "user_cache_dir"]

CACHE_FILE = ".fisherlab-cache.pkl"
CACHE_FORMAT = 1  # bump when the cached payload changes shape
_KEYED_FILES = (RUN_JSON, FISHER_JSONL, SCHEDULE_JSONL, METRICS_JSONL, RESULTS_JSON)
_READER_MODULES = ("reader.py", "columns.py", "schema.py", "cache.py")


@functools.lru_cache(maxsize=1)
def reader_version() -> str:
    """Digest of what decides the parsed result: cache format, reader source, numpy/pandas versions."""
    import numpy as np
    import pandas as pd

    digest = hashlib.sha1(f"{CACHE_FORMAT}|{np.__version__}|{pd.__version__}".encode())
    here = Path(__file__).resolve().parent
    for name in _READER_MODULES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def run_key(run_dir: Path) -> tuple:
    """``(name, size, mtime_ns, inode)`` of each keyed file of ``run_dir`` (``(name, None)`` if absent)."""
    key = []
    for name in _KEYED_FILES:
        try:
            st = os.stat(run_dir / name)
        except OSError:
            key.append((name, None))
        else:
            key.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(key)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fisherlab/load_runs`` (``~/.cache/fisherlab/load_runs`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fisherlab" / "load_runs"


def _digest_name(where: str) -> str:
    """Cache file name of the run whose resolved path is ``where``."""
    return hashlib.sha1(where.encode()).hexdigest()[:24] + ".pkl"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the store's other users (no fsync: a
    lost cache file is rebuilt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, fsync=False, mode=0o644)


class RunCache:
    """Cache of parsed runs at ``location`` (``None``: beside each run; a path: that directory).

    ``get`` returns the cached payload of a run (or None) and the key to store a fresh one
    under; ``put`` stores it. ``problems`` collects one row per unreadable cache file;
    ``hits``/``misses``/``written`` count what happened (for tests and benchmarks).
    """

    def __init__(self, location: str | os.PathLike | None = None) -> None:
        self.location = None if location is None else Path(location)
        self.problems: list[dict] = []
        self.hits = self.misses = self.written = 0

    def _candidates(self, run_dir: Path, where: str) -> Iterator[Path]:
        if self.location is not None:
            yield self.location / _digest_name(where)
            return
        yield run_dir / CACHE_FILE
        yield user_cache_dir() / _digest_name(where)

    def get(self, run_dir: Path) -> tuple[tuple, Any]:
        """``(key, payload)``: payload is None unless a cache file of ``run_dir`` matches ``key``."""
        key = run_key(run_dir)  # taken before reading: a file changed meanwhile misses next time
        version, where = reader_version(), os.path.realpath(run_dir)
        for path in self._candidates(run_dir, where):
            try:
                with open(path, "rb") as handle:
                    entry = pickle.load(handle)
            except (FileNotFoundError, PermissionError):  # none here, or another user's: not ours to report
                continue
            except Exception as err:  # noqa: BLE001 - any unreadable pickle is ignored and rebuilt
                self.problems.append({"run": str(run_dir), "file": str(path), "line": None,
                                      "reason": f"unreadable load cache ({type(err).__name__}: {err})",
                                      "action": "ignored cache (run re-read, cache rewritten)"})
                continue
            if not (isinstance(entry, dict) and isinstance(entry.get("payload"), dict)
                    and {"version", "key", "path"} <= entry.keys()):
                self.problems.append({"run": str(run_dir), "file": str(path), "line": None,
                                      "reason": "load cache holds no cache entry",
                                      "action": "ignored cache (run re-read, cache rewritten)"})
                continue
            if entry["version"] == version and entry["key"] == key and entry["path"] == where:
                self.hits += 1
                return key, entry["payload"]
        self.misses += 1
        return key, None

    def put(self, run_dir: Path, key: tuple, payload: dict) -> None:
        """Store ``payload`` for ``run_dir`` under ``key``; a location that cannot be written is skipped."""
        where = os.path.realpath(run_dir)
        data = pickle.dumps({"version": reader_version(), "key": key, "path": where,
                             "payload": payload}, protocol=pickle.HIGHEST_PROTOCOL)
        for path in self._candidates(run_dir, where):
            try:
                _write_atomic(path, data)
            except OSError:  # read-only store or cache dir: try the next place, else no cache
                continue
            self.written += 1
            return
