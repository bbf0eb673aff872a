"""The two-stage driver (Stickland & Murray, Figure 2) on the tiny testbed: gain rows,
weights restored between targets, early errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fisherlab.cli import app
from fisherlab.runs import read_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _flags(testbed, run_dir: Path) -> list[str]:
    return ["--task", "testbed", "--task_options", json.dumps({"path": str(testbed.root)}),
            "--run_dir", str(run_dir), "--max_steps", "6", "--per_device_train_batch_size", "8",
            "--learning_rate", "3e-3", "--use_cpu", "true", "--seed", "1", "--probe_every", "3",
            "--probe_batches", "1", "--max_eval_samples", "24", "--dataloader_num_workers", "0",
            "--disable_tqdm", "true", "--progress", "false", "--save_strategy", "no"]


def _targets(testbed) -> list[str]:
    return [lang for lang in testbed.languages if lang != testbed.source_language][:2]


def _rows(run_dir: Path, split: str) -> dict[str, float]:
    metrics = read_run(run_dir).metrics
    part = metrics.loc[metrics["split"] == split]
    return {(r.language, r.metric): float(r.value) for r in part.itertuples()}


def test_two_stage_writes_gains_and_restores_stage_one_weights(tiny_testbed, tmp_path, monkeypatch):
    import torch

    import fisherlab.two_stage as two_stage

    entered, changed = [], []
    real = two_stage.target_stage

    def recording(prepared, language, output_dir, **kwargs):
        model = prepared.model
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        entered.append((language, start))
        result = real(prepared, language, output_dir, **kwargs)
        changed.append(sum(not torch.equal(start[n], p) for n, p in model.named_parameters() if p.requires_grad))
        return result

    monkeypatch.setattr(two_stage, "target_stage", recording)
    first, second = _targets(tiny_testbed)
    both = CliRunner().invoke(app, ["two-stage", *_flags(tiny_testbed, tmp_path / "both"),
                                    "--targets", f"{first},{second}", "--stage2-max-steps", "4"])
    assert both.exit_code == 0, both.output
    assert read_run(tmp_path / "both").info["status"] == "completed"
    gain, before, after = (_rows(tmp_path / "both", s) for s in
                           ("two_stage_gain", "two_stage_before", "two_stage_after"))
    assert {lang for lang, _ in gain} == {first, second} and "accuracy" in {m for _, m in gain}
    for key, value in gain.items():
        assert value == pytest.approx(after[key] - before[key])
    # stage 2 trained the task module, and the second target started from the stage-1 weights
    assert [lang for lang, _ in entered] == [first, second] and all(n > 0 for n in changed)
    (_, w1), (_, w2) = entered
    assert all(torch.equal(w1[n], w2[n]) for n in w1)


def test_two_stage_rejects_bad_targets_before_training(tiny_testbed, tmp_path):
    source = tiny_testbed.source_language
    for targets, match in ((source, "is the source language"), ("xx", "not languages of task")):
        result = CliRunner().invoke(app, ["two-stage", *_flags(tiny_testbed, tmp_path / "bad"), "--targets", targets])
        assert result.exit_code == 2 and match in result.output
        assert not (tmp_path / "bad").exists()
