"""load_runs: discovery, tidy frames, config columns, robustness and determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fisherlab.analysis import NoRunsError, load_runs
from fisherlab.analysis.loading import (
    FISHER_COLUMNS,
    METRICS_COLUMNS,
    PROBLEM_COLUMNS,
    RESULTS_COLUMNS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
)
from fisherlab.analysis.synthetic import write_synthetic_store
from fisherlab.runs import RunWriter

WEIRD_NAMES = ["<script>alert(1)</script>", "../../etc/passwd", "run with spaces/and/../dots"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    write_synthetic_store(root / "nested" / "deeper", n_runs=8, n_steps=12, n_blocks=4,
                          methods=("standard", "gradual"), seeds=(0, 1))
    return root


def _robustness_store(root):
    """One good run plus every kind of damage the loader must survive and report."""
    paths = write_synthetic_store(root, n_runs=len(WEIRD_NAMES) + 7, n_steps=10, n_blocks=3,
                                  methods=("gradual",), seeds=(0, 1, 2),
                                  names=[*WEIRD_NAMES, "good", "truncated", "nan-traces", "no-results",
                                         "future-format", "dup-steps", "bad-results"])
    by_name = {p.name: p for p in paths}
    with open(by_name["truncated"] / "fisher.jsonl", "a") as handle:
        handle.write('{"step": 999, "block": "lay')
    with open(by_name["nan-traces"] / "fisher.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 5, "block": "layer.0", "trace": math.nan}) + "\n")
        handle.write(json.dumps({"step": 5, "block": "layer.1", "trace": math.inf}) + "\n")
    (by_name["no-results"] / "results.json").unlink()
    info = json.loads((by_name["future-format"] / "run.json").read_text())
    info["format"] = 99
    (by_name["future-format"] / "run.json").write_text(json.dumps(info))
    lines = (by_name["dup-steps"] / "fisher.jsonl").read_text().splitlines()
    replay = [json.loads(line) for line in lines[:4]]
    for row in replay:
        row["trace"] = 123.0
    with open(by_name["dup-steps"] / "fisher.jsonl", "a") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in replay)
    (by_name["bad-results"] / "results.json").write_text('{"metric": "accuracy", "per_lang')
    return by_name


def test_frames_have_the_contract_columns(synthetic):
    rs = load_runs(synthetic)
    assert len(rs) == 8
    for frame, columns in [(rs.runs, RUN_COLUMNS), (rs.fisher, FISHER_COLUMNS),
                           (rs.schedule, SCHEDULE_COLUMNS), (rs.metrics, METRICS_COLUMNS),
                           (rs.results, RESULTS_COLUMNS), (rs.problems, PROBLEM_COLUMNS)]:
        assert list(frame.columns[: len(columns)]) == columns
    assert rs.problems.empty
    assert len(rs.fisher) == 8 * 12 * 5  # runs x steps x (4 layers + head)
    assert set(rs.runs["method"]) == {"standard", "gradual"}
    assert rs.runs["strategy"].tolist() == rs.runs["method"].tolist()
    assert (rs.runs["k"] > 0).all() and rs.runs["k"].dtype == float
    assert set(rs.runs["seed"]) == {0, 1} and set(rs.runs["estimator"]) == {"per_example"}
    assert (rs.runs["task_module"] == "seq_bn").all()
    assert "config.unfreezing.k" in rs.runs.columns and "config.synthetic.peak_value" in rs.runs.columns
    assert rs.runs["fisher.every"].eq(10).all()
    # cross-lingual average excludes the source language
    res = rs.results
    first = rs.runs.iloc[0]
    mine = res[(res["run_id"] == first["run_id"]) & ~res["is_source"]]
    assert first["xling_avg"] == pytest.approx(mine["value"].mean())
    assert first["source_language"] == "en" and first["result_metric"] == "accuracy"
    assert first["lowest_language"] == "th"


def test_schedule_positions_and_layers(synthetic):
    rs = load_runs(synthetic)
    gradual = rs.runs.loc[rs.runs["method"] == "gradual", "run_id"].iloc[0]
    sched = rs.schedule[rs.schedule["run_id"] == gradual]
    head = sched[sched["block"] == "head"]
    assert head["position"].isna().all() and head["layer"].isna().all()
    layers = sched[sched["layer"].notna()]
    assert layers["layer"].tolist() == [3, 2, 1, 0]
    assert layers["position"].tolist() == [0, 1, 2, 3]
    standard = rs.runs.loc[rs.runs["method"] == "standard", "run_id"].iloc[0]
    together = rs.schedule[(rs.schedule["run_id"] == standard) & rs.schedule["layer"].notna()]
    assert together["position"].tolist() == [0, 0, 0, 0]  # unfrozen by one event


def test_same_input_same_frames(synthetic):
    a = load_runs(synthetic)
    b = load_runs([str(p) for p in sorted(synthetic.rglob("run.json"), reverse=True)])
    for name in ("runs", "fisher", "schedule", "metrics", "results", "problems"):
        left, right = getattr(a, name), getattr(b, name)
        if name == "runs":
            left, right = left.drop(columns="path"), right.drop(columns="path")
        pd.testing.assert_frame_equal(left, right)
    assert a.runs["run_id"].is_monotonic_increasing


def test_globs_progress_and_select(synthetic):
    rs = load_runs(str(synthetic / "**" / "*gradual*"), progress=True)
    assert set(rs.runs["method"]) == {"gradual"} and len(rs) == 4
    sub = rs.select(rs.run_ids[:2])
    assert len(sub) == 2 and set(sub.fisher["run_id"]) == set(rs.run_ids[:2])
    assert len(rs.where(seed=0)) == 2


def test_empty_input_is_a_clear_error(tmp_path):
    with pytest.raises(NoRunsError, match="no paths given"):
        load_runs([])
    with pytest.raises(NoRunsError, match="no run directory"):
        load_runs(tmp_path)
    with pytest.raises(NoRunsError, match="no such file"):
        load_runs(tmp_path / "missing")
    with pytest.raises(NoRunsError, match="glob matched nothing"):
        load_runs(str(tmp_path / "*.nothing"))


def test_all_runs_unreadable_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(json.dumps({"format": 7, "run_id": "x"}))
    with pytest.raises(NoRunsError, match="unknown run format version 7"):
        load_runs(tmp_path)


def test_robustness_store(tmp_path):
    by_name = _robustness_store(tmp_path)
    (tmp_path / "not-a-run").mkdir()
    rs = load_runs([tmp_path, tmp_path / "missing-dir", tmp_path / "not-a-run"])
    ids = set(rs.runs["run_id"])
    assert set(WEIRD_NAMES) <= ids  # weird names are data, kept verbatim
    assert "future-format" not in ids and len(rs) == len(by_name) - 1
    problems = rs.problems

    def about(run, text):
        where = problems["run"].fillna(problems["file"]).astype(str)
        rows = problems[where.str.contains(run, regex=False)
                        & problems["reason"].str.contains(text, regex=False)]
        assert len(rows) >= 1, (run, text, problems.to_dict("records"))
        return rows.iloc[0]

    assert about("truncated", "truncated last line")["action"] == "dropped line"
    assert about("nan-traces", "non-finite 'trace'")["action"] == "dropped row"
    assert "2 rows" in about("nan-traces", "non-finite 'trace'")["reason"]
    assert about("no-results", "no results.json")["action"].startswith("kept run without results")
    assert about("future-format", "unknown run format version 99")["action"] == "skipped run"
    assert about("dup-steps", "duplicated (step, block)")["action"] == "deduplicated (kept the last)"
    assert about("bad-results", "invalid JSON")["action"].startswith("ignored results")
    assert about("missing-dir", "no such file")["action"] == "ignored input"
    assert about("not-a-run", "no run directory")["action"] == "ignored input"
    # repaired data: the duplicates' last values won, no NaN/inf survived, no truncated row
    dup = rs.fisher[rs.fisher["run_id"] == "dup-steps"]
    assert (dup[dup["step"] == 0]["trace"] == 123.0).all() and not dup.duplicated(["step", "block"]).any()
    assert np.isfinite(rs.fisher["trace"]).all()
    assert 999 not in set(rs.fisher["step"])
    no_results = rs.runs.set_index("run_id").loc["no-results"]
    assert math.isnan(no_results["xling_avg"]) and "no-results" not in set(rs.results["run_id"])
    # every problem row is complete
    assert problems["reason"].notna().all() and problems["action"].notna().all()


def test_duplicate_run_ids_are_renamed_and_reported(tmp_path):
    for name in ("a", "b"):
        writer = RunWriter.create(tmp_path / name, {"seed": 0}, run_id="same")
        writer.log_fisher([{"block": "layer.0", "layer": 0, "trace": 1.0}], step=0)
        writer.finish()
    rs = load_runs(tmp_path)
    assert sorted(rs.runs["run_id"]) == ["same", "same#2"]
    assert (rs.problems["action"] == "repaired (renamed to 'same#2')").sum() == 1
    assert sorted(rs.fisher["run_id"]) == ["same", "same#2"]


def test_missing_run_metadata_is_repaired(tmp_path):
    run_dir = tmp_path / "legacy"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "completed", "config": {"strategy": "fisher"}}))
    (run_dir / "fisher.jsonl").write_text(json.dumps({"step": 0, "block": "layer.4", "trace": 2.0}) + "\n")
    rs = load_runs(run_dir)
    assert rs.runs["run_id"].tolist() == ["legacy"] and rs.runs["method"].tolist() == ["fisher"]
    assert rs.fisher["layer"].tolist() == [4]  # from the block naming contract
    actions = set(rs.problems["action"])
    assert "repaired (assumed format 1)" in actions and "repaired (run_id = directory name)" in actions


def test_training_style_config_columns(tmp_path):
    config = {"model": {"base": "bert-base-multilingual-cased", "task_module": "lora", "lora_r": 8},
              "task": {"task": "xnli", "languages": ["en", "de"]},
              "schedule": {"strategy": "permutation:order=5,4,3,2,1,0;k=50", "method": None},
              "strategy": "permutation:order=5,4,3,2,1,0;k=50", "method": "permutation+fisher_penalty",
              "seed": 42, "task_name": "xnli", "training": {"seed": 42, "learning_rate": 5e-4}}
    writer = RunWriter.create(tmp_path / "r", config, fisher={"estimator": "exact", "every": 50})
    writer.finish()
    row = load_runs(tmp_path).runs.iloc[0]
    assert row["method"] == "permutation+fisher_penalty" and row["strategy"] == "permutation"
    assert row["strategy_spec"] == "permutation:order=5,4,3,2,1,0;k=50" and row["k"] == 50.0
    assert (row["model"], row["task"], row["task_module"], row["seed"]) == (
        "bert-base-multilingual-cased", "xnli", "lora", 42)
    assert row["estimator"] == "exact" and row["config.training.learning_rate"] == 5e-4
    assert row["config.task.languages"] == '["en", "de"]'
    plain = {"strategy": "gradual:k=800"}
    RunWriter.create(tmp_path / "p", plain).finish()
    rs = load_runs(tmp_path / "p")
    assert (rs.runs["method"].iloc[0], rs.runs["k"].iloc[0]) == ("gradual", 800.0)


def test_synthetic_store_is_reproducible(tmp_path):
    a = write_synthetic_store(tmp_path / "a", n_runs=3, n_steps=5, n_blocks=2, seed=11)
    b = write_synthetic_store(tmp_path / "b", n_runs=3, n_steps=5, n_blocks=2, seed=11)
    for left, right in zip(a, b, strict=True):
        for name in ("run.json", "fisher.jsonl", "schedule.jsonl", "metrics.jsonl", "results.json"):
            assert (left / name).read_bytes() == (right / name).read_bytes()
    c = write_synthetic_store(tmp_path / "c", n_runs=3, n_steps=5, n_blocks=2, seed=12)
    assert (a[0] / "fisher.jsonl").read_bytes() != (c[0] / "fisher.jsonl").read_bytes()
    with pytest.raises(TypeError, match="unknown knob"):
        write_synthetic_store(tmp_path / "d", n_runs=1, colour="red")


def _train_py_config(strategy: str, method: str, seed: int, regulariser: dict | None = None) -> dict:
    """A config shaped exactly like ``fisherlab.train.RunConfig.to_dict`` writes it."""
    return {"model": {"base": None, "task_module": "seq_bn", "lang_adapters": None, "lora_r": 8},
            "task": {"task": "testbed", "task_options": '{"path": "/tb"}', "source_language": None},
            "schedule": {"strategy": strategy, "regularisers": None, "method": method},
            "probe": {"probe_every": 3, "probe_batches": 2, "probe_estimator": "per_example"},
            "run": {"run_dir": "/x", "resume": False}, "training": {"seed": seed, "learning_rate": 3e-3},
            "seed": seed, "strategy": strategy, "method": method, "task_name": "testbed",
            "resolved": {"base": "/tb/base", "lang_adapters": {"en": "/tb/adapters/en"},
                         "source_language": "en", "languages": ["en", "sov"], "reduction_factor": 2,
                         "model_name": "testbed-encoder"},
            "regulariser": regulariser or {"kind": "none", "weight": 0.0, "terms": []},
            "model_name": "testbed-encoder"}


def test_train_py_config_columns(tmp_path):
    """model from model_name (model.base is null), task from task_name, k from the strategy string."""
    config = _train_py_config("fisher:k=1;n_batches=2;seed=3", "fisher+fisher_penalty", 3,
                              {"kind": "fisher_penalty", "weight": 0.01,
                               "terms": ["fisher_penalty:alpha=0.01"]})
    RunWriter.create(tmp_path / "a", config, fisher={"estimator": "per_example"}).finish()
    RunWriter.create(tmp_path / "b", _train_py_config("standard", "standard", 0)).finish()
    runs = load_runs(tmp_path).runs.set_index("run_id")
    a, b = runs.loc["a"], runs.loc["b"]
    assert (a["model"], a["task"], a["task_module"], a["seed"]) == ("testbed-encoder", "testbed", "seq_bn", 3)
    assert (a["method"], a["strategy"], a["k"]) == ("fisher+fisher_penalty", "fisher", 1.0)
    assert (a["config.regulariser.kind"], a["config.regulariser.weight"]) == ("fisher_penalty", 0.01)
    assert a["estimator"] == "per_example" and a["config.resolved.model_name"] == "testbed-encoder"
    assert (b["method"], b["strategy"], b["seed"], b["config.regulariser.kind"]) == ("standard", "standard", 0, "none")
    assert math.isnan(b["k"])
