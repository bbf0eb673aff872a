"""Run store: writer/reader round trip, atomic writes, resume, damaged files, versions."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from fisherlab.runs import (
    FORMAT_VERSION,
    RunExistsError,
    RunFormatError,
    RunWriter,
    atomic_write_json,
    read_run,
    read_runs,
)


def _fisher_rows(step: int, n_layers: int = 3) -> list[dict]:
    rows = [{"block": f"layer.{i}", "layer": i, "trace": float(step + i), "stderr": 0.1 * i,
             "trainable": i >= n_layers - 1 - step // 10, "n_examples": 16} for i in range(n_layers)]
    rows.append({"block": "head", "layer": None, "trace": 0.5, "stderr": 0.0, "trainable": True,
                 "n_examples": 16})
    return rows


def _write_run(run_dir: Path, steps=(0, 10, 20, 30), finish: bool = True) -> RunWriter:
    writer = RunWriter.create(run_dir, {"strategy": "gradual", "k": 10, "seed": 3,
                                        "model": {"name": "tiny-bert", "layers": 3}},
                              fisher={"estimator": "per_example", "every": 10, "n_batches": 2},
                              env={"fisherlab": "test"})
    for step in steps:
        writer.log_fisher(_fisher_rows(step), step=step)
        writer.log_metric(step, "validation", "en", "accuracy", 50.0 + step)
    writer.log_schedule(0, ["head", "layer.2"], "gradual", scores={"layer.2": 1.5})
    writer.log_schedule(10, ["layer.1"], "gradual")
    if finish:
        writer.write_results("accuracy", "en", {"en": 80.0, "de": 60.0, "sw": 40.0}, split="test")
        writer.finish()
    return writer


def test_round_trip(tmp_path):
    run_dir = tmp_path / "run-a"
    writer = _write_run(run_dir)
    assert writer.run_id == "run-a" and writer.status == "completed"
    run = read_run(run_dir)
    assert run.problems == []
    assert run.info["format"] == FORMAT_VERSION == 1
    assert run.info["status"] == "completed" and "finished" in run.info
    assert run.config["model"] == {"name": "tiny-bert", "layers": 3}
    assert run.info["fisher"]["estimator"] == "per_example"
    assert len(run.fisher) == 4 * 4
    first = run.fisher.iloc[0]
    assert (first["step"], first["block"], first["layer"], first["trace"]) == (0, "layer.0", 0, 0.0)
    head = run.fisher[run.fisher["block"] == "head"]
    assert head["layer"].isna().all() and head["trainable"].all()
    assert run.fisher["trainable"].tolist()[:3] == [False, False, True]
    assert list(run.schedule["blocks"].iloc[0]) == ["head", "layer.2"]
    assert run.schedule["scores"].iloc[0] == {"layer.2": 1.5}
    assert run.metrics["value"].tolist() == [50.0, 60.0, 70.0, 80.0]
    assert run.results["per_language"] == {"en": 80.0, "de": 60.0, "sw": 40.0}
    assert run.results["split"] == "test"
    # read_run also accepts the run.json path
    assert read_run(run_dir / "run.json").run_id == "run-a"


def test_numpy_scalars_are_written_as_numbers(tmp_path):
    writer = RunWriter.create(tmp_path / "r", {"seed": np.int64(1)})
    writer.log_fisher([{"block": "layer.0", "layer": np.int64(0), "trace": np.float32(2.5),
                        "trainable": np.bool_(True)}], step=np.int64(5))
    run = read_run(tmp_path / "r")
    assert [p["reason"] for p in run.problems] == ["no results.json"]  # still running
    assert run.fisher["trace"].tolist() == [2.5] and run.fisher["step"].tolist() == [5]
    assert run.fisher["trainable"].tolist() == [True]


def test_writer_rejects_bad_input(tmp_path):
    writer = RunWriter.create(tmp_path / "r", {})
    with pytest.raises(ValueError, match="lacks"):
        writer.log_fisher([{"block": "layer.0"}], step=0)
    with pytest.raises(ValueError, match="step"):
        writer.log_metric(-1, "validation", "en", "accuracy", 1.0)
    with pytest.raises(ValueError, match="per_language"):
        writer.write_results("accuracy", "en", {})
    with pytest.raises(TypeError, match="blocks"):
        writer.log_schedule(0, "layer.0", "gradual")
    with pytest.raises(ValueError, match="status"):
        writer.finish("done")


def test_create_refuses_a_finished_run(tmp_path):
    run_dir = tmp_path / "r"
    _write_run(run_dir)
    with pytest.raises(RunExistsError, match="finished run"):
        RunWriter.create(run_dir, {})
    RunWriter.create(run_dir, {"seed": 9}, overwrite=True)
    run = read_run(run_dir)
    assert run.status == "running" and run.fisher.empty and run.results is None
    with pytest.warns(UserWarning, match="unfinished run"):
        RunWriter.create(run_dir, {})


def test_context_manager_marks_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with RunWriter.create(tmp_path / "r", {}) as writer:
            writer.log_fisher([{"block": "layer.0", "trace": 1.0}], step=0)
            raise RuntimeError("diverged")
    info = read_run(tmp_path / "r").info
    assert info["status"] == "failed" and "diverged" in info["error"]


def test_atomic_json_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "doc.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"a": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]  # no temp file left


def test_jsonl_lines_are_complete_after_each_call(tmp_path):
    writer = RunWriter.create(tmp_path / "r", {})
    writer.log_fisher(_fisher_rows(0), step=0)
    text = (tmp_path / "r" / "fisher.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())


def test_resume_drops_later_rows(tmp_path):
    run_dir = tmp_path / "r"
    _write_run(run_dir, steps=(0, 10, 20, 30))
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 40, "split": "valid')  # crash mid-line
    writer = RunWriter.resume(run_dir, from_step=10)
    assert writer.status == "running"
    run = read_run(run_dir)
    assert run.problems[-1]["reason"] == "no results.json"  # removed: stale after resuming
    assert sorted(run.fisher["step"].unique()) == [0, 10]
    assert run.metrics["step"].tolist() == [0, 10]
    assert run.schedule["step"].tolist() == [0, 10]
    resumes = run.info["resumes"]
    assert resumes[0]["from_step"] == 10 and resumes[0]["results_removed"] is True
    assert resumes[0]["dropped_lines"]["fisher.jsonl"] == 8
    assert resumes[0]["dropped_lines"]["metrics.jsonl"] == 3  # steps 20, 30 and the torn line
    writer.log_fisher(_fisher_rows(20), step=20)
    writer.write_results("accuracy", "en", {"en": 1.0, "de": 2.0})
    writer.finish()
    run = read_run(run_dir)
    assert run.problems == [] and sorted(run.fisher["step"].unique()) == [0, 10, 20]


def test_truncated_last_line_is_reported_not_fatal(tmp_path):
    run_dir = tmp_path / "r"
    _write_run(run_dir)
    with open(run_dir / "fisher.jsonl", "a") as handle:
        handle.write('{"step": 40, "block": "lay')
    run = read_run(run_dir)
    assert len(run.fisher) == 16
    (problem,) = run.problems
    assert problem["action"] == "dropped line" and "truncated last line" in problem["reason"]
    assert problem["line"] == 17 and problem["file"].endswith("fisher.jsonl")


def test_malformed_and_invalid_rows_are_dropped_with_line_numbers(tmp_path):
    run_dir = tmp_path / "r"
    writer = RunWriter.create(run_dir, {})
    writer.log_fisher([{"block": "layer.0", "trace": 1.0}], step=0)
    with open(run_dir / "fisher.jsonl", "a") as handle:
        handle.write("not json\n")
        handle.write(json.dumps({"step": 1, "block": "layer.0", "trace": "high"}) + "\n")
        handle.write(json.dumps([1, 2]) + "\n")
        handle.write("\n")
    writer.log_fisher([{"block": "layer.0", "trace": math.nan}, {"block": "layer.1", "trace": math.inf}], step=2)
    writer.log_fisher([{"block": "layer.0", "trace": 3.0, "stderr": "x"}], step=3)
    run = read_run(run_dir)
    run.problems = [p for p in run.problems if p["reason"] != "no results.json"]
    assert run.fisher["step"].tolist() == [0, 3]
    assert np.isnan(run.fisher["stderr"].iloc[1])
    by_reason = {p["reason"]: p for p in run.problems}
    assert by_reason["invalid JSON (Expecting value)"]["line"] == 2
    assert any("non-numeric 'trace'" in r and "line 3" in r for r in by_reason)
    assert any("expected a JSON object" in r for r in by_reason)
    nonfinite = [p for p in run.problems if "non-finite" in p["reason"]]
    assert len(nonfinite) == 1 and "2 rows: line 6, 7" in nonfinite[0]["reason"]
    assert any("'stderr' is not a number" in r for r in by_reason)


def test_duplicated_steps_keep_the_last(tmp_path):
    run_dir = tmp_path / "r"
    writer = RunWriter.create(run_dir, {})
    writer.log_fisher([{"block": "layer.0", "trace": 1.0}], step=0)
    writer.log_fisher([{"block": "layer.0", "trace": 2.0}], step=0)
    writer.log_metric(0, "validation", None, "loss", 1.0)
    writer.log_metric(0, "validation", None, "loss", 0.5)
    run = read_run(run_dir)
    assert run.fisher["trace"].tolist() == [2.0]
    assert run.metrics["value"].tolist() == [0.5]
    actions = [p["action"] for p in run.problems]
    assert actions.count("deduplicated (kept the last)") == 2


def test_unknown_format_version(tmp_path):
    run_dir = tmp_path / "future"
    _write_run(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    info["format"] = 2
    (run_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunFormatError, match="unknown run format version 2"):
        read_run(run_dir)
    tables = read_runs([run_dir])
    assert tables.runs == [] and tables.problems[0]["action"] == "skipped run"


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RunFormatError, match="no run.json"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text("{broken")
    with pytest.raises(RunFormatError, match="invalid JSON"):
        read_run(tmp_path)


def test_invalid_utf8_is_repaired_and_reported(tmp_path):
    run_dir = tmp_path / "r"
    writer = RunWriter.create(run_dir, {})
    writer.log_metric(0, "validation", "en", "accuracy", 1.0)
    with open(run_dir / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"step": 1, "split": "valid\xff", "language": "en", "metric": "accuracy", "value": 2.0}\n')
    run = read_run(run_dir)
    assert run.metrics["value"].tolist() == [1.0, 2.0]
    (problem,) = [p for p in run.problems if "UTF-8" in p["reason"]]
    assert problem["line"] == 2 and problem["action"].startswith("repaired")


def test_docs_document_every_schema_field():
    from fisherlab.runs.schema import ALL_FIELDS

    docs = (Path(__file__).resolve().parents[1] / "docs" / "run-format.md").read_text(encoding="utf-8")
    for name, fields in ALL_FIELDS.items():
        section = docs.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for field_name, (_, required) in fields.items():
            row = [line for line in section.splitlines() if line.startswith(f"| `{field_name}` |")]
            assert row, f"docs/run-format.md does not document {name}:{field_name}"
            assert ("| yes |" in row[0]) == required, f"{name}:{field_name} required flag differs"
