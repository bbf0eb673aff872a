"""The researcher's own path: an existing Trainer script plus FisherlabRun gives a complete run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from own_path_helpers import link_tiny_testbed

from fisherlab.runs import RunWriter, read_run

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FLAGS = ["--tiny", "--max_steps", "12", "--probe_every", "4", "--probe_batches", "2", "--eval_steps", "6",
         "--batch_size", "8", "--max_samples", "32", "--strategy", "gradual:k=3"]


@pytest.fixture
def tiny_cache(tiny_testbed, tmp_path, monkeypatch):
    monkeypatch.setenv("FISHERLAB_CACHE", str(tmp_path / "cache"))
    link_tiny_testbed(tiny_testbed, tmp_path / "cache")
    return tiny_testbed


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def _check_complete(run_dir: Path, testbed) -> None:
    run = read_run(run_dir)
    assert run.problems == []
    info = run.info
    assert info["status"] == "completed"
    labels = info["labels"]
    assert labels["method"] == "gradual" and labels["strategy"] == "gradual:k=3"
    assert labels["task"] == "testbed" and labels["task_module"] == "seq_bn" and labels["estimator"] == "per_example"
    # the callbacks say what they are
    assert info["config"]["callbacks"]["unfreeze"]["strategy"] == "gradual:k=3"
    assert info["config"]["callbacks"]["fisher_probe"]["every"] == 4
    assert info["fisher"]["estimator"] == "per_example"
    n_layers = json.loads((Path(testbed.base_dir) / "config.json").read_text())["num_hidden_layers"]
    assert len(run.schedule) == n_layers
    assert sorted(set(run.fisher["step"])) == [0, 4, 8, 12]
    validation = run.metrics[(run.metrics["split"] == "validation") & (run.metrics["metric"] == "accuracy")]
    assert sorted(validation["step"]) == [6, 12]
    assert set(run.results["per_language"]) == set(testbed.languages)
    assert run.results["metric"] == "accuracy" and run.results["source_language"] == testbed.source_language


@pytest.mark.parametrize("script", ["own_trainer", "adapter_trainer"])
def test_example_scripts_write_a_complete_run(tiny_cache, tmp_path, script):
    module = _example("own_trainer")
    trainer_class = None
    if script == "adapter_trainer":  # the AdapterTrainer script is the same main with another class
        from adapters import AdapterTrainer

        source = (EXAMPLES / "adapter_trainer.py").read_text()
        assert "main(trainer_class=AdapterTrainer)" in source
        trainer_class = AdapterTrainer
    run_dir = tmp_path / script
    kwargs = {"trainer_class": trainer_class} if trainer_class else {}
    module.main([*FLAGS, "--run_dir", str(run_dir)], **kwargs)
    _check_complete(run_dir, tiny_cache)
    # the report understands it: one method, not "(unlabelled)"
    from fisherlab.analysis import load_runs

    runs = load_runs([str(run_dir)])
    assert list(runs.runs["method"]) == ["gradual"]


def test_adapter_trainer_script_runs_as_a_program(tiny_cache, tmp_path):
    import subprocess

    run_dir = tmp_path / "prog"
    env = {**__import__("os").environ, "PYTHONPATH": str(EXAMPLES.parent)}
    done = subprocess.run([sys.executable, str(EXAMPLES / "adapter_trainer.py"), *FLAGS, "--run_dir", str(run_dir)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_complete(run_dir, tiny_cache)
    # expected warnings are silenced: pin_memory on CPU
    assert "pin_memory" not in done.stderr


def _tiny_trainer(tmp_path, model, **kwargs):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from fisherlab.tiny import tiny_batch

    batch = tiny_batch(batch_size=16, seq_len=8, seed=0)  # a datasets.Dataset: the Trainer drops unknown columns
    rows = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, **kwargs)
    return Trainer(model=model, args=args, train_dataset=rows)


def test_fisherlab_run_sets_label_names_of_an_adapters_model_and_finishes_flat_results(tmp_path):
    from fisherlab.hf import FisherlabRun
    from fisherlab.tiny import tiny_adapter_model

    model = tiny_adapter_model(task="xnli", num_labels=3)
    trainer = _tiny_trainer(tmp_path, model)
    assert trainer.label_names == []  # a plain Trainer cannot see the labels of an adapters model
    run = FisherlabRun(tmp_path / "run", strategy="gradual:k=1", source_language="en").attach(trainer)
    assert trainer.label_names == ["labels"] and trainer.args.label_names == ["labels"]
    trainer.train()  # without the fix: "The model did not return a loss"
    run.finish(trainer, results={"accuracy": 61.4})  # what task.evaluate returns for one language
    info = read_run(tmp_path / "run")
    assert info.info["status"] == "completed" and info.info["labels"]["task"] == "xnli"
    assert info.results["per_language"] == {"en": 61.4} and info.results["metric"] == "accuracy"


def test_fisherlab_run_marks_a_failed_run(tmp_path):
    from fisherlab.hf import FisherlabRun
    from fisherlab.tiny import tiny_adapter_model

    trainer = _tiny_trainer(tmp_path, tiny_adapter_model(task="xnli"))
    with pytest.raises(RuntimeError, match="boom"), FisherlabRun(tmp_path / "run") as run:
        run.attach(trainer)
        raise RuntimeError("boom")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and "boom" in info["error"]


def test_bare_writer_gets_labels_from_the_callbacks(tmp_path):
    """RunWriter.create(dir, config={}) used to give method '(unlabelled)' and no strategy/estimator."""
    from fisherlab.hf import (
        FisherProbeCallback,
        UnfreezeCallback,
        ValidationMetricsCallback,
        bind_callbacks,
    )
    from fisherlab.tiny import tiny_adapter_model

    model = tiny_adapter_model(task="xnli")
    trainer = _tiny_trainer(tmp_path, model, label_names=["labels"], logging_steps=2)
    writer = RunWriter.create(tmp_path / "run", config={})
    assert writer.info["labels"]["method"] == "(unlabelled)"
    for cb in (UnfreezeCallback("gradual:k=1", "xnli", writer=writer),
               FisherProbeCallback(every=2, n_batches=1, estimator="exact", writer=writer),
               ValidationMetricsCallback(writer, "en")):
        trainer.add_callback(cb)
    trainer.callback_handler.callbacks[-3].prepare(model)
    bind_callbacks(trainer)
    trainer.train()
    writer.finish()
    labels = json.loads((tmp_path / "run" / "run.json").read_text())["labels"]
    assert labels["method"] == "gradual" and labels["strategy"] == "gradual:k=1"
    assert labels["estimator"] == "exact"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "train" and r["metric"] == "loss" for r in rows)


def test_train_uses_the_public_validation_callback(tiny_testbed, tmp_path):
    import fisherlab.train as train

    assert not hasattr(train, "_metrics_callback")  # one home: fisherlab.hf.ValidationMetricsCallback
    from fisherlab.hf import ValidationMetricsCallback

    config = train.parse_config(None, ["--task", "testbed", "--task_options", json.dumps({"path": str(tiny_testbed.root)}),
                                       "--run_dir", str(tmp_path / "r"), "--max_steps", "2", "--use_cpu", "true"])
    prepared = train.prepare_run(config)
    writer = RunWriter.create(tmp_path / "r", config={})
    trainer = train.build_trainer(prepared, writer)
    assert any(isinstance(cb, ValidationMetricsCallback) for cb in trainer.callback_handler.callbacks)
    assert trainer.args.dataloader_pin_memory is False  # CPU: no pin_memory warning


def test_fisherlab_run_validates_at_construction_and_order(tmp_path):
    from fisherlab.errors import FisherlabError
    from fisherlab.hf import FisherlabRun, FisherlabRunError

    with pytest.raises(FisherlabError, match="exacto"):
        FisherlabRun(tmp_path / "r", probe_every=10, probe_estimator="exacto")
    with pytest.raises(FisherlabError, match="unknown unfreezing strategy"):
        FisherlabRun(tmp_path / "r", strategy="gradul:k=3")
    with pytest.raises(FisherlabRunError, match="attach"):
        FisherlabRun(tmp_path / "r").finish(None, results={"accuracy": 1.0})
    assert not (tmp_path / "r").exists()


def test_results_shapes_are_normalised():
    from fisherlab.runs.results import scores_by_language
    from fisherlab.runs.schema import RunFormatError

    assert scores_by_language({"accuracy": 61.4}, language="en") == {"en": {"accuracy": 61.4}}
    nested = {"en": {"f1": 80.0, "exact_match": 70.0}, "de": {"f1": 60.0, "exact_match": 50.0}}
    assert scores_by_language(nested) == nested
    assert scores_by_language({"en": 1.0, "de": 2.0}, metric="accuracy") == {"en": {"accuracy": 1.0},
                                                                            "de": {"accuracy": 2.0}}
    with pytest.raises(RunFormatError, match="say which"):
        scores_by_language({"accuracy": 61.4})
    with pytest.raises(RunFormatError, match="mixes"):
        scores_by_language({"en": {"accuracy": 1.0}, "de": 2.0})
    with pytest.raises(RunFormatError, match="finite number"):
        scores_by_language({"accuracy": "high"}, language="en")
