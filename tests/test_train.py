"""`fisherlab train`: one run on the tiny testbed writes a complete run; resume; bad configs fail early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback
from typer.testing import CliRunner

from fisherlab.cli import app
from fisherlab.runs import read_run
from fisherlab.train import ConfigError, parse_config, run_training

STEPS = 12


def _flags(testbed, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--task", "testbed", "--task_options", json.dumps({"path": str(testbed.root)}),
        "--run_dir", str(run_dir), "--max_steps", str(STEPS), "--per_device_train_batch_size", "8",
        "--learning_rate", "3e-3", "--eval_strategy", "steps", "--eval_steps", "6", "--logging_steps", "3",
        "--save_steps", "6", "--use_cpu", "true", "--seed", "1", "--probe_every", "3", "--probe_batches", "2",
        "--max_eval_samples", "32", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
        "--progress", "false", *extra,
    ]


def test_cli_train_writes_a_complete_run(tiny_testbed, tmp_path):
    run_dir = tmp_path / "gu"
    result = CliRunner().invoke(app, ["train", *_flags(tiny_testbed, run_dir, "--strategy", "gradual:k=3")])
    assert result.exit_code == 0, result.output
    run = read_run(run_dir)
    assert run.problems == []
    assert run.info["status"] == "completed" and run.info["format"] == 1
    assert run.info["config"]["strategy"] == "gradual:k=3"
    assert run.info["labels"] == {"version": 1, "method": "gradual", "strategy": "gradual:k=3", "seed": 1,
                                  "model": run.info["config"]["resolved"]["model_name"], "task": "testbed",
                                  "task_module": "seq_bn", "regulariser": "none", "regulariser_weight": 0.0,
                                  "estimator": "per_example", "fpen": None}
    assert run.info["env"]["transformers"] and run.info["env"]["attn_implementation"]
    n_layers = json.loads((Path(tiny_testbed.base_dir) / "config.json").read_text())["num_hidden_layers"]
    # gradual: the top layer at step 0, then the next one down every 3 steps
    schedule = run.schedule.sort_values("step")
    assert list(schedule["step"]) == [3 * i for i in range(n_layers)]
    assert [b for blocks in schedule["blocks"] for b in blocks] == [f"layer.{i}" for i in reversed(range(n_layers))]
    # the probe measured every 3 steps (and at the end), every block, with its estimator
    fisher = run.fisher
    assert sorted(set(fisher["step"])) == list(range(0, STEPS + 1, 3))
    assert set(fisher["estimator"]) == {"per_example"}
    assert (fisher["trace"] >= 0).all()
    # validation curve in metrics.jsonl, zero-shot results for every language
    validation = run.metrics[(run.metrics["split"] == "validation") & (run.metrics["metric"] == "accuracy")]
    assert sorted(validation["step"]) == [6, 12]
    # the probe logs at the same steps as the Trainer: the Trainer's own loss rows must survive
    train_loss = run.metrics[(run.metrics["split"] == "train") & (run.metrics["metric"] == "loss")]
    assert sorted(train_loss["step"]) == [3, 6, 9, 12]
    assert run.results["source_language"] == tiny_testbed.source_language
    assert set(run.results["per_language"]) == set(tiny_testbed.languages)
    assert all(0 <= v <= 100 for v in run.results["per_language"].values())


class _Interrupt(TrainerCallback):
    """Stops the process-like run mid-way (after a checkpoint was written)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("simulated kill")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_resume_after_interruption_equals_uninterrupted_run(tiny_testbed, tmp_path):
    strategy = ["--strategy", "random:k=3;seed=5"]
    whole = run_training(parse_config(None, _flags(tiny_testbed, tmp_path / "whole", *strategy)))

    broken_dir = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        run_training(parse_config(None, _flags(tiny_testbed, broken_dir, *strategy)), extra_callbacks=[_Interrupt(8)])
    assert json.loads((broken_dir / "run.json").read_text())["status"] == "failed"
    # a failed run directory is not silently overwritten
    with pytest.raises(ConfigError, match="already holds a run"):
        run_training(parse_config(None, _flags(tiny_testbed, broken_dir, *strategy)))
    run_training(parse_config(None, _flags(tiny_testbed, broken_dir, *strategy, "--resume", "true")))

    for name in ("fisher.jsonl", "schedule.jsonl"):
        assert _rows(broken_dir / name) == _rows(whole / name), name
    assert json.loads((broken_dir / "results.json").read_text()) == json.loads((whole / "results.json").read_text())
    assert json.loads((broken_dir / "run.json").read_text())["status"] == "completed"


def test_finished_run_is_not_overwritten_without_flag(tiny_testbed, tmp_path):
    run_dir = tmp_path / "done"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"format": 1, "status": "completed"}))
    with pytest.raises(ConfigError, match="--overwrite"):
        run_training(parse_config(None, _flags(tiny_testbed, run_dir)))


@pytest.mark.parametrize("extra,field", [
    (["--task", "xnli_typo"], "task"),
    (["--strategy", "gradual:k=0"], "strategy"),
    (["--strategy", "sideways:k=3"], "strategy"),
    (["--strategy", "permutation:order=0,0;k=2"], "strategy"),
    (["--base", "/nonexistent/model/dir"], "base"),
    (["--lang_adapters", "en=/nowhere/en"], "lang_adapters"),
    (["--languages", "en,klingon"], "languages"),
    (["--probe_estimator", "magic"], "probe_estimator"),
    (["--regularisers", "fisher_penalty:alpha=x"], "regularisers"),
    (["--task_module", "prefix"], "task_module"),
])
def test_bad_config_fails_before_training_naming_the_field(tiny_testbed, tmp_path, extra, field):
    run_dir = tmp_path / "bad"
    flags = _flags(tiny_testbed, run_dir)
    # later flags override earlier ones (argparse), so appending replaces the default
    result = CliRunner().invoke(app, ["train", *flags, *extra])
    assert result.exit_code == 2, result.output
    assert f"error: {field}" in result.output
    assert not (run_dir / "run.json").exists()  # nothing written: it failed before training


def test_config_file_and_flags_merge(tiny_testbed, tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        f"task: testbed\nrun_dir: {tmp_path / 'r'}\nstrategy: lpft:k=4\nlearning_rate: 0.001\nmax_steps: 5\n")
    config = parse_config(config_file, ["--strategy", "gradual:k=2", "--seed", "7"])
    assert config.schedule.strategy == "gradual:k=2"  # the flag wins
    assert config.training.learning_rate == 0.001 and config.training.max_steps == 5
    assert config.training.seed == 7
    assert config.training.output_dir == str(tmp_path / "r" / "checkpoints")
    assert config.method == "gradual"
    with pytest.raises(ConfigError, match="unknown config field"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("strategi: gradual:k=2\nrun_dir: x\n")
        parse_config(bad)
    with pytest.raises(ConfigError, match="run_dir"):
        parse_config(None, ["--task", "testbed"])


def test_lang_adapters_and_regulariser_strings_parse_or_name_the_field():
    from fisherlab.train import parse_lang_adapters, split_regularisers

    assert parse_lang_adapters("en=a, de=b") == {"en": "a", "de": "b"}
    assert parse_lang_adapters('{"en": "a"}') == {"en": "a"}
    with pytest.raises(ConfigError, match="lang_adapters: language 'en' is given twice"):
        parse_lang_adapters("en=a,en=b")
    with pytest.raises(ConfigError, match="lang_adapters: not a valid JSON object"):
        parse_lang_adapters("{en")
    assert split_regularisers('["l2:weight=1", "fisher_penalty:alpha=0.1"]') == ["l2:weight=1",
                                                                                "fisher_penalty:alpha=0.1"]
    with pytest.raises(ConfigError, match="regularisers: not a valid JSON list"):
        split_regularisers("[l2")


def test_method_and_labels_use_canonical_regulariser_labels(tiny_testbed, tmp_path):
    """``fpen:`` and ``fisher_penalty:``, ``kl:view=rdrop`` and ``consistency:view=dropout``: one label each."""
    def config(regularisers: str):
        return parse_config(None, _flags(tiny_testbed, tmp_path / "r", "--strategy", "gradual:k=3",
                                         "--regularisers", regularisers))

    for text in ("fpen:alpha=0.5", "fisher:alpha=0.5;method=finite_difference", "fisher_penalty:alpha=0.5"):
        labels = config(text).labels()
        assert (config(text).method, labels["regulariser"], labels["regulariser_weight"]) == (
            "gradual+fisher_penalty", "fisher_penalty", 0.5)
        # the note's scale: fisherlab penalises alpha * B * ||g_bar||^2, the note fpen * ||g_bar||^2
        batch = config(text).training.per_device_train_batch_size
        assert labels["fpen"] == pytest.approx(0.5 * batch) and batch > 1
    assert config("fpen:alpha=0.5;scaled=false").labels()["fpen"] == 0.5
    two = config("kl:view=rdrop;weight=2;l2:weight=0.1")
    assert two.method == "gradual+consistency/dropout+l2"
    assert (two.labels()["regulariser"], two.labels()["regulariser_weight"]) == ("consistency/dropout+l2", None)
    assert two.labels()["fpen"] is None
    with pytest.raises(ConfigError, match=r"regularisers: .*write 'l2:weight=0.1;to=init'"):
        config("l2:weight=0.1,to=init").regulariser_specs()
