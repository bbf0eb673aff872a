"""The examples' configs run through the CLI as shipped; --from-run round trip; sweep dry-run checks;
analyze refuses an unknown baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
from own_path_helpers import link_tiny_testbed
from typer.testing import CliRunner

from fisherlab.cli import app
from fisherlab.runs import read_run

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RUN_BOUND = {"run_dir", "output_dir", "logging_dir"}


@pytest.fixture
def tiny_cache(tiny_testbed, tmp_path, monkeypatch):
    monkeypatch.setenv("FISHERLAB_CACHE", str(tmp_path / "cache"))
    link_tiny_testbed(tiny_testbed, tmp_path / "cache")
    return tiny_testbed


def _comparable(config: dict) -> dict:
    out = {}
    for section in ("model", "task", "schedule", "probe", "run", "training"):
        out[section] = {k: v for k, v in config[section].items() if k not in RUN_BOUND}
    return out


def test_example_train_config_and_from_run_round_trip(tiny_cache, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    result = CliRunner().invoke(app, ["train", str(EXAMPLES / "train.yaml"), "--run_dir", str(first),
                                      "--progress", "false"])
    assert result.exit_code == 0, result.output
    run = read_run(first)
    assert run.info["status"] == "completed" and run.info["labels"]["method"] == "fisher"
    assert len(run.schedule) and len(run.fisher) and run.results["per_language"]
    result = CliRunner().invoke(app, ["train", "--from-run", str(first), "--run_dir", str(second)])
    assert result.exit_code == 0, result.output
    again = read_run(second)
    assert _comparable(again.info["config"]) == _comparable(run.info["config"])
    assert again.info["labels"] == run.info["labels"]
    # the same config trains the same run
    assert again.fisher["trace"].tolist() == pytest.approx(run.fisher["trace"].tolist())
    assert again.results["per_language"] == run.results["per_language"]


def test_from_run_refuses_a_directory_without_a_train_config(tmp_path):
    from fisherlab.config import ConfigError, fields_from_run
    from fisherlab.runs import RunWriter

    RunWriter.create(tmp_path / "bare", config={}).finish()
    with pytest.raises(ConfigError, match="holds no `fisherlab train` config"):
        fields_from_run(tmp_path / "bare")
    with pytest.raises(ConfigError, match="does not exist"):
        fields_from_run(tmp_path / "nothing")


def test_example_sweep_config_runs_and_the_report_checks_its_baseline(tiny_cache, tmp_path):
    out = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", str(EXAMPLES / "sweep.yaml"), "--methods", "standard,gradual",
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = CliRunner().invoke(app, ["analyze", str(out), "--out", str(tmp_path / "report"), "--baseline",
                                      "standrd", "--no-progress", "--figures", "trace"])
    assert report.exit_code == 2
    assert "standrd" in report.output and "gradual, standard" in report.output
    report = CliRunner().invoke(app, ["analyze", str(out), "--out", str(tmp_path / "report"), "--baseline",
                                      "standard", "--no-progress", "--figures", "trace", "--n-boot", "20",
                                      "--n-perm", "20"])
    assert report.exit_code == 0, report.output


@pytest.mark.parametrize("flag,value,field", [("--languages", "en,zz", "languages"),
                                              ("--source_language", "zz", "source_language"),
                                              ("--probe_estimator", "exacto", "probe_estimator"),
                                              ("--strategy", "gradual", "strategy")])
def test_sweep_dry_run_makes_the_checks_of_the_real_run(tiny_cache, tmp_path, flag, value, field):
    base = ["sweep", str(EXAMPLES / "sweep.yaml"), "--methods", "standard", "--out", str(tmp_path / "s"),
            "--dry-run", "--", flag, value]
    if field == "strategy":  # no k and no step budget: the run would refuse it, so does the plan
        base += ["--max_steps", "-1", "--num_train_epochs", "1"]
        base[base.index("--methods") + 1] = "gradual"
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 2, result.output
    assert f"{field}" in result.output
    assert not (tmp_path / "s").exists()
