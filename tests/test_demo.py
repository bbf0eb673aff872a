"""`fisherlab demo` on the tiny world: runs for each method x seed, a report, and reuse on rerun."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fisherlab.cli import app
from fisherlab.demo import run_demo
from fisherlab.spec.methods import method_strategy


def test_demo_trains_reports_and_reuses(tiny_testbed, tmp_path):
    out = tmp_path / "demo"
    options = dict(world="tiny", methods=["standard", "gradual"], seeds=[0], steps=6, probe_every=3,
                   probe_batches=1, progress=False, testbed_dir=tiny_testbed.root,
                   report_options={"n_boot": 50, "n_perm": 50})
    result = run_demo(out, **options)
    assert result.runs == {"standard-s0": "trained", "gradual-s0": "trained"}
    for name in result.runs:
        info = json.loads((result.runs_dir / name / "run.json").read_text())
        assert info["status"] == "completed" and info["config"]["method"] == name.split("-")[0]
        assert info["labels"]["method"] == name.split("-")[0] and info["labels"]["seed"] == 0
    assert (result.report_dir / "report.html").is_file()
    summary = json.loads((result.report_dir / "summary.json").read_text())
    assert summary  # the report summarised something
    import torch

    threads = torch.get_num_threads()
    again = run_demo(out, **{**options, "threads": threads + 1})
    assert set(again.runs.values()) == {"reused"}
    assert torch.get_num_threads() == threads  # the demo's thread count is not left behind


def test_demo_rejects_unknown_method_before_work(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'fun'"):
        run_demo(tmp_path, methods=["fun"])
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--methods", "standard,fun"])
    assert result.exit_code == 2 and "unknown method" in result.output
    assert method_strategy("fisher", 5, 2, 8) == "fisher:k=5;n_batches=8;seed=2"


def test_demo_console_one_bar_one_line_per_run_logs_in_run_dirs(tiny_testbed, tmp_path, capsys):
    """Default console: a status line per run (method, seed, step, last validation score), no Trainer
    log dicts; those go to each run's train.log. ``verbose``: the Trainer's own stream."""
    options = dict(world="tiny", methods=["standard"], seeds=[0], steps=4, probe_every=2, probe_batches=1,
                   progress=True, testbed_dir=tiny_testbed.root, report_options={"n_boot": 20, "n_perm": 20,
                                                                                 "figures": ("trace",)})
    capsys.readouterr()
    result = run_demo(tmp_path / "quiet", **options)
    out = capsys.readouterr()
    console = out.out + out.err
    assert "[1/1] standard-s0 trained (method=standard seed=0 step=4 validation accuracy=" in console
    assert "runs: 100%" in console and "1/1" in console
    assert "{'loss'" not in console and "'eval_loss'" not in console
    log = (result.runs_dir / "standard-s0" / "train.log").read_text()
    assert "'loss'" in log and "'eval_accuracy'" in log

    run_demo(tmp_path / "verbose", **options, verbose=True)
    out = capsys.readouterr()
    console = out.out + out.err
    assert "sweep [1/1] standard-s0 (standard)" in console and "'eval_accuracy'" in console
    assert not (tmp_path / "verbose" / "runs" / "standard-s0" / "train.log").exists()
