"""The load_runs cache: identical frames, per-run invalidation (changed, new, deleted runs),
corrupt cache files, problems kept, cache location (off, moved, read-only store)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import fisherlab.analysis.loading as loading
import fisherlab.runs.cache as cache_mod
import fisherlab.runs.reader as reader
from fisherlab.analysis import load_runs
from fisherlab.analysis.synthetic import write_synthetic_store
from fisherlab.runs.cache import CACHE_FILE

FRAMES = ("runs", "fisher", "schedule", "metrics", "results", "problems")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Six synthetic runs, one with a malformed fisher line (a problem row) and one without results."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    root = tmp_path / "store"
    paths = write_synthetic_store(root, n_runs=6, n_steps=8, n_blocks=3)
    with open(paths[1] / "fisher.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 3, "block": \n')
    (paths[2] / "results.json").unlink()
    return root, paths


@pytest.fixture
def reads(monkeypatch):
    """Names of the run directories whose data files were parsed (not taken from a cache)."""
    seen: list[str] = []
    real = reader._read_files

    def spy(run_dir, label):
        seen.append(Path(run_dir).name)
        return real(run_dir, label)

    monkeypatch.setattr(reader, "_read_files", spy)
    return seen


def assert_same(a, b, skip=()):
    for name in FRAMES:
        if name not in skip:
            pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)


def test_cached_frames_equal_the_files_and_problems_are_kept(store, reads):
    root, paths = store
    plain = load_runs(root, cache=False)
    assert reads and not list(root.rglob(CACHE_FILE))  # cache=False writes nothing
    reads.clear()
    cold = load_runs(root)
    assert sorted(reads) == sorted(p.name for p in paths)
    assert len(list(root.rglob(CACHE_FILE))) == len(paths)
    reads.clear()
    warm = load_runs(root)
    assert reads == []  # nothing parsed
    assert_same(plain, cold)
    assert_same(plain, warm)
    reasons = " ".join(warm.problems["reason"])
    assert "invalid JSON" in reasons and "no results.json" in reasons  # the problems came from the cache


def test_a_changed_new_or_deleted_run_invalidates_only_itself(store, reads):
    root, paths = store
    load_runs(root)
    # one more fisher row in one run
    run = paths[3]
    last = json.loads((run / "fisher.jsonl").read_text().splitlines()[-1])
    with open(run / "fisher.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({**last, "step": last["step"] + 1000, "trace": 0.5}) + "\n")
    reads.clear()
    warm = load_runs(root)
    assert reads == [run.name]
    assert_same(load_runs(root, cache=False), warm)
    assert (warm.fisher["step"] == last["step"] + 1000).sum() == 1
    # a new run (a copy under another id)
    new = root / "copied-run"
    shutil.copytree(paths[0], new)
    info = json.loads((new / "run.json").read_text())
    (new / "run.json").write_text(json.dumps({**info, "run_id": "copied-run"}))
    (new / CACHE_FILE).unlink()
    reads.clear()
    warm = load_runs(root)
    assert reads == ["copied-run"]
    assert_same(load_runs(root, cache=False), warm)
    assert "copied-run" in warm.run_ids
    # a deleted run
    shutil.rmtree(paths[4])
    reads.clear()
    warm = load_runs(root)
    assert reads == []
    assert_same(load_runs(root, cache=False), warm)
    assert len(warm) == len(paths)  # 6 - 1 + 1


def test_same_size_rewrite_and_a_new_reader_version_invalidate(store, reads, monkeypatch):
    root, paths = store
    load_runs(root)
    path = paths[5] / "results.json"
    text = path.read_text()
    document = json.loads(text)
    language = sorted(document["per_language"])[0]
    old = f"{document['per_language'][language]!r}"
    changed = text.replace(old, old[:-1] + ("1" if old[-1] != "1" else "2"), 1)
    assert len(changed) == len(text) and changed != text
    stat = path.stat()
    path.write_text(changed)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    reads.clear()
    warm = load_runs(root)
    assert reads == [paths[5].name]
    assert_same(load_runs(root, cache=False), warm)
    monkeypatch.setattr(cache_mod, "reader_version", lambda: "another reader")
    reads.clear()
    load_runs(root)
    assert sorted(reads) == sorted(p.name for p in paths)


@pytest.mark.parametrize("garbage", [b"not a pickle", b"", None])
def test_a_corrupt_cache_file_is_reported_ignored_and_rebuilt(store, reads, garbage):
    import pickle

    root, paths = store
    plain = load_runs(root, cache=False)
    load_runs(root)
    target = paths[0] / CACHE_FILE
    target.write_bytes(pickle.dumps(["a list, not an entry"]) if garbage is None else garbage)
    reads.clear()
    warm = load_runs(root)
    assert reads == [paths[0].name]
    assert_same(plain, warm, skip=("problems",))
    extra = warm.problems.iloc[len(plain.problems):] if len(warm.problems) > len(plain.problems) else None
    assert extra is not None and len(extra) == 1
    row = extra.iloc[0]
    run_id = plain.runs.set_index("path").loc[str(paths[0]), "run_id"]
    assert row["run"] == run_id and row["file"] == str(target) and "load cache" in row["reason"]
    assert row["action"].startswith("ignored cache")
    reads.clear()
    again = load_runs(root)  # rebuilt: no problem, nothing parsed
    assert reads == []
    assert_same(plain, again)


def test_cache_can_be_moved_and_a_read_only_store_falls_back(store, reads, tmp_path, monkeypatch):
    root, paths = store
    plain = load_runs(root, cache=False)
    elsewhere = tmp_path / "elsewhere"
    load_runs(root, cache=elsewhere)
    assert not list(root.rglob(CACHE_FILE)) and len(list(elsewhere.glob("*.pkl"))) == len(paths)
    reads.clear()
    assert_same(plain, load_runs(root, cache=elsewhere))
    assert reads == []

    # a store that cannot be written: the user cache directory instead, else no cache at all
    real_write = cache_mod._write_atomic

    def read_only_store(path, data):
        if Path(path).is_relative_to(root):
            raise PermissionError(13, "Read-only file system", str(path))
        return real_write(path, data)

    monkeypatch.setattr(cache_mod, "_write_atomic", read_only_store)
    reads.clear()
    assert_same(plain, load_runs(root))
    assert len(reads) == len(paths) and not list(root.rglob(CACHE_FILE))
    user = cache_mod.user_cache_dir()
    assert user.is_relative_to(tmp_path / "user-cache") and len(list(user.glob("*.pkl"))) == len(paths)
    reads.clear()
    assert_same(plain, load_runs(root))
    assert reads == []

    def nothing_writable(path, data):
        raise OSError(30, "Read-only file system", str(path))

    shutil.rmtree(user)
    monkeypatch.setattr(cache_mod, "_write_atomic", nothing_writable)
    reads.clear()
    assert_same(plain, load_runs(root))
    assert_same(plain, load_runs(root))
    assert len(reads) == 2 * len(paths)  # silently uncached


def test_bad_cache_argument_and_duplicate_run_ids(store, reads):
    root, paths = store
    with pytest.raises(TypeError, match="cache=3"):
        load_runs(root, cache=3)
    info = json.loads((paths[1] / "run.json").read_text())
    twin = root / "twin"
    shutil.copytree(paths[1], twin)  # same run_id: renamed on load, read afresh, never cached
    (twin / CACHE_FILE).unlink(missing_ok=True)
    plain = load_runs(root, cache=False)
    assert f"{info['run_id']}#2" in plain.run_ids
    load_runs(root)
    reads.clear()
    warm = load_runs(root)
    assert_same(plain, warm)
    assert reads == ["twin"]
    assert loading.RunCache is cache_mod.RunCache
