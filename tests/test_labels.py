"""The labels contract of run.json: written and validated by RunWriter.create, read by one key,
older stores through the one shim (legacy_labels)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fisherlab.analysis import load_runs
from fisherlab.runs import RunFormatError, RunWriter, labels_of, legacy_labels, validate_labels
from fisherlab.runs.labels import LABEL_FIELDS, UNLABELLED

REPO = Path(__file__).resolve().parents[1]

LABELS = {"version": 1, "method": "top_down", "strategy": "permutation:order=1,0;k=2", "seed": 3,
          "model": "tiny", "task": "testbed", "task_module": "seq_bn", "regulariser": "consistency/dropout",
          "regulariser_weight": 1.0, "estimator": "per_example"}


def test_labels_are_written_and_read_by_one_key(tmp_path):
    config = {"method": "something-else", "model": {"base": "other"}}  # the labels win over the config
    RunWriter.create(tmp_path / "r", config, labels=LABELS).finish()
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["labels"] == LABELS
    row = load_runs(tmp_path).runs.iloc[0]
    assert (row["method"], row["strategy"], row["k"], row["seed"], row["model"]) == (
        "top_down", "permutation", 2.0, 3, "tiny")
    assert (row["regulariser"], row["regulariser_weight"], row["estimator"]) == (
        "consistency/dropout", 1.0, "per_example")


@pytest.mark.parametrize("change, message", [
    ({"method": None}, r"label 'method' must be non-empty text, got None"),
    ({"seed": "3"}, r"label 'seed' must be int\|null, got '3'"),
    ({"regulariser_weight": "heavy"}, r"label 'regulariser_weight' must be number\|null"),
    ({"version": 7}, r"labels version 7 is not supported"),
])
def test_writer_rejects_ill_typed_labels(tmp_path, change, message):
    with pytest.raises(RunFormatError, match=message):
        RunWriter.create(tmp_path / "r", {}, labels={**LABELS, **change})
    assert not (tmp_path / "r" / "run.json").exists()


def test_writer_rejects_missing_labels_naming_them(tmp_path):
    partial = {k: v for k, v in LABELS.items() if k not in ("task", "estimator")}
    with pytest.raises(RunFormatError, match=r"missing label\(s\) \['task', 'estimator'\]"):
        RunWriter.create(tmp_path / "r", {}, labels=partial)


def test_bare_writer_derives_labels_from_its_config(tmp_path):
    bare = RunWriter.create(tmp_path / "bare", config={})
    assert bare.info["labels"]["method"] == UNLABELLED and bare.info["labels"]["regulariser"] == "none"
    plain = RunWriter.create(tmp_path / "plain", config={"strategy": "gradual:k=8", "seed": 1},
                             fisher={"estimator": "exact"})
    assert {k: plain.info["labels"][k] for k in ("method", "strategy", "seed", "estimator")} == {
        "method": "gradual", "strategy": "gradual:k=8", "seed": 1, "estimator": "exact"}
    assert set(plain.info["labels"]) == set(LABEL_FIELDS)


def test_old_stores_are_read_through_the_shim(tmp_path):
    """A run.json without labels (before labels v1): the shim reproduces the old guessing."""
    info = {"format": 1, "run_id": "old", "created": "2026-01-01T00:00:00Z", "status": "completed",
            "config": {"unfreezing": {"strategy": "fisher:k=4", "k": 4}, "training": {"seed": 2},
                       "model": {"name_or_path": "xlmr"}, "task": {"name": "xnli"}, "adapter": "lora",
                       "regularizer": {"type": "fpen", "lambda": 0.5}},
            "fisher": {"estimator": "batch"}}
    labels = legacy_labels(info)
    assert labels == {"version": 1, "method": "fisher", "strategy": "fisher:k=4", "seed": 2, "model": "xlmr",
                      "task": "xnli", "task_module": "lora", "regulariser": "fpen", "regulariser_weight": 0.5,
                      "estimator": "batch"}
    assert validate_labels(labels) == labels
    assert labels_of(info) == (labels, None)
    broken = {**info, "labels": {"method": "x"}}
    got, why = labels_of(broken)
    assert got == labels and "missing label" in why
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(json.dumps(broken))
    runset = load_runs(tmp_path)
    assert runset.runs.iloc[0]["method"] == "fisher" and runset.runs.iloc[0]["regulariser_weight"] == 0.5
    assert "repaired (legacy labels)" in runset.problems["action"].tolist()


def test_committed_demo_store_loads_through_the_shim():
    runs = load_runs(REPO / "artifacts" / "demo" / "runs").runs.set_index("run_id")
    assert set(runs["method"]) == {"standard", "gradual", "fisher"}
    assert set(runs["regulariser"]) == {"none"} and set(runs["regulariser_weight"]) == {0.0}
    assert runs.loc["fisher-s1", "seed"] == 1 and runs.loc["gradual-s0", "k"] > 0
    assert math.isnan(runs.loc["standard-s0", "k"]) and set(runs["model"]) == {"testbed-encoder"}
