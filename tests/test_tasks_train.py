"""`fisherlab train` end to end from a YAML config with `task:` and `data_dir:`, for every real task.

A tiny BERT built from a config and a word-level tokenizer over the fixture texts
are saved as the base model; the run trains 20 steps on a seeded subset, validates
(F1 and exact match for QA) and evaluates zero-shot, writing the run store.
"""

from __future__ import annotations

import json

import pytest
import yaml
from task_helpers import FIXTURES, fixture_texts, save_tiny_base, word_tokenizer
from typer.testing import CliRunner

from fisherlab.cli import app
from fisherlab.runs import read_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _data_dir(task: str, tmp_path, shared_data) -> tuple:
    """(data_dir, languages, task_options) of a task; XQuAD/XCOPA combine the real files with fixtures."""
    if task == "xnli":
        return FIXTURES / "xnli", "en,de,zh", {}
    if task == "pawsx":
        return FIXTURES / "pawsx", "en,de,zh", {}
    if task == "mlqa":
        return FIXTURES / "mlqa", "en,de,zh", {"max_length": 48, "stride": 16}
    root = tmp_path / "data"
    root.mkdir()
    if task == "xquad":
        (root / "xquad").symlink_to(shared_data / "xquad")
        (root / "squad").symlink_to(FIXTURES / "mlqa" / "squad")
        return root, "en,de", {"max_length": 48, "stride": 16, "max_examples": 6}
    (root / "xcopa").symlink_to(shared_data / "xcopa")
    (root / "COPA").symlink_to(FIXTURES / "copa" / "COPA")
    return root, "it", {"max_examples": 12}


@pytest.mark.parametrize("task", ["xnli", "pawsx", "mlqa", "xquad", "xcopa"])
def test_cli_train_from_yaml(task, tmp_path, request):
    shared = request.getfixturevalue("shared_data") if task in ("xquad", "xcopa") else None
    data_dir, languages, options = _data_dir(task, tmp_path, shared)
    texts = fixture_texts(data_dir if task not in ("xquad", "xcopa") else FIXTURES / ("mlqa" if task == "xquad" else "copa"))
    if task == "xquad":
        texts += fixture_texts(shared / "xquad")
    if task == "xcopa":
        texts += fixture_texts(shared / "xcopa" / "it")
    tokenizer = word_tokenizer(texts, max_length=128)
    base = save_tiny_base(tmp_path / "base", tokenizer, max_positions=128)
    run_dir = tmp_path / "run"
    config = {
        "task": task, "data_dir": str(data_dir), "base": base, "languages": languages, "run_dir": str(run_dir),
        "max_steps": 20, "per_device_train_batch_size": 4, "learning_rate": 3e-3, "eval_strategy": "steps",
        "eval_steps": 10, "logging_steps": 10, "save_strategy": "no", "use_cpu": True, "seed": 1,
        "max_train_samples": 6, "max_eval_samples": 8, "dataloader_num_workers": 0, "disable_tqdm": True,
        "progress": False, "report_to": "none", "eval_batch_size": 8,
    }
    if options:
        config["task_options"] = json.dumps(options)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = read_run(run_dir)
    assert run.problems == [] and run.info["status"] == "completed"
    assert run.info["config"]["task"]["data_dir"] == str(data_dir)
    qa = task in ("mlqa", "xquad")
    metrics = ("f1", "exact_match") if qa else ("accuracy",)
    assert run.results["metric"] == metrics[0] and set(run.results["per_language"]) == set(languages.split(","))
    assert set(run.results["per_metric"]) == set(metrics)
    assert run.results["per_metric"][metrics[0]] == run.results["per_language"]
    assert all(0 <= v <= 100 for values in run.results["per_metric"].values() for v in values.values())
    validation = run.metrics[run.metrics["split"] == "validation"]
    for metric in metrics:  # the validation curve during training, F1 and EM for QA
        assert sorted(validation[validation["metric"] == metric]["step"]) == [10, 20], metric
    test = run.metrics[run.metrics["split"] == "test"]
    assert len(test) == len(metrics) * len(languages.split(",")) and set(test["step"]) == {20}


def test_cli_train_names_a_missing_data_file(tmp_path):
    tokenizer = word_tokenizer(["a b"], max_length=32)
    base = save_tiny_base(tmp_path / "base", tokenizer, max_positions=32)
    (tmp_path / "empty").mkdir()
    flags = ["--task", "xnli", "--data_dir", str(tmp_path / "empty"), "--base", base, "--run_dir",
             str(tmp_path / "run"), "--max_steps", "2", "--use_cpu", "true", "--progress", "false"]
    result = CliRunner().invoke(app, ["train", *flags])
    assert result.exit_code == 2, result.output
    assert "multinli_1.0/multinli_1.0_train.jsonl does not exist; it is part of MultiNLI 1.0" in result.output
    assert not (tmp_path / "run" / "run.json").exists()
