"""`fisherlab sweep --jobs N`: runs in parallel worker processes on CPU, failures recorded, the
manifest written by one process only, GPU assignment with a faked GPU count, thread split."""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_sweep import _flags, _manifest, testbed4  # noqa: F401 - the module's tiny testbed fixture
from typer.testing import CliRunner

import fisherlab.sweep.parallel as parallel
from fisherlab.analysis import load_runs
from fisherlab.cli import app
from fisherlab.config import ConfigError
from fisherlab.sweep import MANIFEST, plan_sweep, run_sweep
from fisherlab.sweep.console import LOG_FILE

# Loaded by every worker process (PYTHONPATH): makes chosen runs fail inside the worker, the
# way a real run fails -- an exception from training, or the process dying without a result.
_SITECUSTOMIZE = textwrap.dedent("""
    import os
    _raise, _die = os.environ.get("FL_TEST_RAISE", ""), os.environ.get("FL_TEST_DIE", "")
    if _raise or _die:
        from pathlib import Path
        import fisherlab.train as _train
        _real = _train.run_training

        def run_training(config, *args, **kwargs):
            name = Path(config.run.run_dir).name
            if name == _raise:
                raise RuntimeError("injected failure in " + name)
            if name == _die:
                os._exit(3)
            return _real(config, *args, **kwargs)

        _train.run_training = run_training
""")


@pytest.fixture
def faults(tmp_path, monkeypatch):
    """Workers import a sitecustomize that fails the runs named in FL_TEST_RAISE / FL_TEST_DIE."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return monkeypatch


def test_two_jobs_on_cpu_record_failures_split_threads_and_resume(testbed4, tmp_path, faults):  # noqa: F811
    out = tmp_path / "runs"
    plan = plan_sweep(None, _flags(testbed4), methods=("standard", "gradual"), seeds=(0, 1), k=1, out=out)
    names = [r.name for r in plan]
    assert names == ["standard-s0", "standard-s1", "gradual-s0", "gradual-s1"]
    faults.setenv("FL_TEST_RAISE", "gradual-s1")
    faults.setenv("FL_TEST_DIE", "standard-s1")
    # a reader polls sweep.json while the workers run: every read must be a whole manifest
    seen: list[dict[str, str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if (out / MANIFEST).exists():
                runs = json.loads((out / MANIFEST).read_text())["runs"]  # raises on a torn file
                seen.append({r["name"]: r["status"] for r in runs})
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_sweep(plan, progress=False, jobs=2)
    finally:
        stop.set()
        watcher.join()
    assert seen and all(list(s) == names for s in seen)
    assert max(sum(v == "running" for v in s.values()) for s in seen) == 2  # two at once, never more
    assert result.statuses == {"standard-s0": "trained", "standard-s1": "failed", "gradual-s0": "trained",
                               "gradual-s1": "failed"}
    manifest = _manifest(out)
    assert [r["name"] for r in manifest["runs"]] == names  # plan order, whatever order runs ended in
    records = {r["name"]: r for r in manifest["runs"]}
    assert "injected failure in gradual-s1" in records["gradual-s1"]["error"]
    assert "worker exited with code 3 without a result" in records["standard-s1"]["error"]
    assert records["standard-s0"]["error"] is None and records["standard-s0"]["seconds"] > 0
    expected_threads = max(1, parallel.cpu_cores() // 2)
    assert {r["threads"] for r in manifest["runs"]} == {expected_threads}
    assert {r["device"] for r in manifest["runs"]} == {None}  # no GPU: nothing assigned
    # each run's output went to its own train.log, the failure's traceback included
    assert "RuntimeError: injected failure in gradual-s1" in (out / "gradual-s1" / LOG_FILE).read_text()
    assert json.loads((out / "standard-s0" / "run.json").read_text())["status"] == "completed"

    # second pass from the command line, no faults: finished runs reused, failed ones trained
    faults.delenv("FL_TEST_RAISE")
    faults.delenv("FL_TEST_DIE")
    cli = CliRunner().invoke(app, ["sweep", "--methods", "standard,gradual", "--seeds", "2", "--k", "1",
                                   "--out", str(out), "--jobs", "2", "--quiet", "--", *_flags(testbed4)])
    assert cli.exit_code == 0, cli.output
    assert "4 runs (2 reused, 2 trained)" in cli.output
    assert {r["name"]: r["status"] for r in _manifest(out)["runs"]} == {
        "standard-s0": "reused", "standard-s1": "trained", "gradual-s0": "reused", "gradual-s1": "trained"}
    runset = load_runs(out, cache=False)
    assert len(runset) == 4 and set(runset.runs["status"]) == {"completed"}


def test_gpus_are_assigned_one_run_each_with_a_faked_gpu_count(testbed4, tmp_path, monkeypatch, capsys):  # noqa: F811
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parallel.detect_gpus() == ["0", "1"]
    out = tmp_path / "runs"
    plan = plan_sweep(None, _flags(testbed4, "--max_steps", "2"), methods=("standard",), seeds=(0, 1, 2),
                      out=out)
    result = run_sweep(plan, progress=True, jobs=3)  # 3 asked, 2 GPUs x 1 run: 2 at a time
    assert result.statuses == {"standard-s0": "trained", "standard-s1": "trained", "standard-s2": "trained"}
    err = capsys.readouterr().err
    assert "--jobs 3 but 2 GPU(s) x 1 run(s) each: 2 run(s) at a time" in err
    runs = _manifest(out)["runs"]
    # each worker saw exactly one device; the first two (started together) got different ones
    assert [r["device"] for r in runs[:2]] == ["0", "1"] and runs[2]["device"] in ("0", "1")
    assert {r["threads"] for r in runs} == {max(1, parallel.cpu_cores() // 2)}
    assert "[3/3]" in err  # one status line per run under the one bar


def test_device_pool_never_overfills_a_gpu():
    pool = parallel.DevicePool(["3", "5"], runs_per_gpu=2)
    assert pool.slots == 4
    got = [pool.acquire() for _ in range(4)]
    assert sorted(got) == ["3", "3", "5", "5"] and got[:2] == ["3", "5"]  # spread before sharing
    with pytest.raises(RuntimeError, match="every GPU already holds 2"):
        pool.acquire()
    pool.release("5")
    assert pool.acquire() == "5"
    cpu = parallel.DevicePool([])
    assert cpu.slots is None and cpu.acquire() is None
    with pytest.raises(ConfigError, match="runs_per_gpu"):
        parallel.DevicePool(["0"], runs_per_gpu=0)
    with pytest.raises(ConfigError, match="names a device twice"):
        parallel.DevicePool(["0", "0"])


@pytest.mark.parametrize(("visible", "expected"), [("2,3", ["2", "3"]), ("", []), ("-1", []),
                                                   ("1,-1,2", ["1"]), (" 0 , 1 ", ["0", "1"])])
def test_detect_gpus_follows_cuda_visible_devices(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert parallel.detect_gpus() == expected


def test_threads_split_across_runs():
    assert parallel.threads_per_run(3, cores=8) == 2
    assert parallel.threads_per_run(4, cores=2) == 1
    assert parallel.threads_per_run(1, cores=16) == 16


def test_bad_jobs_fail_before_anything_is_written(testbed4, tmp_path):  # noqa: F811
    out = tmp_path / "runs"
    plan = plan_sweep(None, _flags(testbed4), methods=("standard",), seeds=(0,), out=out)
    for kwargs in ({"jobs": 0}, {"jobs": 2, "runs_per_gpu": 0}, {"jobs": 1.5}):
        with pytest.raises(ConfigError, match="expected an integer >= 1"):
            run_sweep(plan, progress=False, **kwargs)
    assert not (out / MANIFEST).exists()
    cli = CliRunner().invoke(app, ["sweep", "--methods", "standard", "--out", str(out), "--jobs", "0", "--",
                                   *_flags(testbed4)])
    assert cli.exit_code == 2 and "jobs: 0" in cli.output
    assert not Path(out / MANIFEST).exists()
