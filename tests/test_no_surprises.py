"""No silent surprises: early validation, no abbreviations, k required or derived, pooler block,
inactive adapters, fast torch-free command start, quiet model builds."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# -- early validation ---------------------------------------------------------------------------
def test_probe_callback_refuses_an_unknown_estimator_at_construction():
    from fisherlab.errors import FisherlabError
    from fisherlab.hf import FisherProbeCallback
    from fisherlab.spec.strategies import StrategyError, strategy_from_string

    with pytest.raises(FisherlabError, match="exacto.*per_example"):
        FisherProbeCallback(estimator="exacto")
    with pytest.raises(StrategyError, match="exacto"):
        strategy_from_string("fisher:k=5;estimator=exacto")


def test_no_argparse_abbreviations():
    from fisherlab.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="--max_step"):
        parse_config(None, ["--run_dir", "/tmp/x", "--max_step", "3"])
    assert parse_config(None, ["--run_dir", "/tmp/x", "--max_steps", "3"]).training.max_steps == 3


# -- k: required or derived; a schedule that cannot complete ---------------------------------------
def test_interval_is_derived_from_the_budget_or_required():
    from fisherlab.spec.budget import resolve_interval, schedule_shortfall
    from fisherlab.spec.strategies import StrategyError

    resolved, note = resolve_interval("gradual", 4, 200)
    assert resolved == "gradual:k=50" and "k=50" in note and "max_steps 200" in note
    assert resolve_interval("gradual:k=7", 4, 200) == ("gradual:k=7", None)
    assert resolve_interval("standard", 4, 200) == ("standard", None)
    with pytest.raises(StrategyError, match="give the interval k"):
        resolve_interval("gradual", 4, -1)  # epochs budget: nothing to derive from
    with pytest.raises(StrategyError, match="lpft"):
        resolve_interval("lpft", 4, 200)
    assert schedule_shortfall("gradual:k=800", 4, 200) is not None
    assert "cannot complete" in schedule_shortfall("gradual:k=800", 4, 200)
    assert schedule_shortfall("gradual:k=50", 4, 200) is None  # decisions at 0, 50, 100, 150
    assert schedule_shortfall("gradual:k=67", 4, 200) is not None  # the last would be at 201
    assert schedule_shortfall("lpft:k=300", 4, 200) is not None
    assert schedule_shortfall("standard", 4, 200) is None


def test_train_derives_k_and_says_so(tiny_testbed, tmp_path, caplog):
    from fisherlab.config import ConfigError, parse_config, validate_static
    from fisherlab.train import prepare_run

    flags = ["--task", "testbed", "--task_options", json.dumps({"path": str(tiny_testbed.root)}),
             "--run_dir", str(tmp_path / "r"), "--use_cpu", "true", "--strategy", "gradual"]
    config = parse_config(None, [*flags, "--max_steps", "20"])
    with caplog.at_level(logging.WARNING, logger="fisherlab.train"):
        prepare_run(config)
    n_layers = json.loads((Path(tiny_testbed.base_dir) / "config.json").read_text())["num_hidden_layers"]
    assert config.schedule.strategy == f"gradual:k={20 // n_layers}"
    assert any("gives no k" in r.getMessage() for r in caplog.records)
    assert config.labels()["strategy"] == f"gradual:k={20 // n_layers}"
    with pytest.raises(ConfigError, match="strategy: .*give the interval k"):
        validate_static(parse_config(None, [*flags, "--num_train_epochs", "1"]))


def test_unfreeze_callback_warns_when_the_schedule_cannot_complete(tmp_path):
    from datasets import Dataset
    from transformers import TrainingArguments

    from fisherlab.hf import UnfreezeCallback, make_trainer_class
    from fisherlab.tiny import tiny_adapter_model, tiny_batch

    batch = tiny_batch(batch_size=8, seed=0)
    data = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                             save_strategy="no", use_cpu=True, label_names=["labels"], disable_tqdm=True)
    trainer = make_trainer_class()(model=tiny_adapter_model(task="t"), args=args, train_dataset=data,
                                   callbacks=[UnfreezeCallback("gradual:k=5", "t")])
    with pytest.warns(UserWarning, match="cannot complete in max_steps=2"):
        trainer.train()


# -- blocks: the pooler, inactive adapters -----------------------------------------------------------
def test_full_mode_pooler_is_its_own_block():
    import torch
    from transformers import BertForSequenceClassification

    from fisherlab.blocks import BlockMap
    from fisherlab.tiny import tiny_config

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config("bert", num_layers=2))
    blocks = BlockMap.from_model(model)
    assert "pooler" in blocks.names
    assert all("pooler" in n for n in blocks["pooler"].param_names)
    assert not any("pooler" in n for n in blocks["embeddings"].param_names)
    assert all("embeddings" in n for n in blocks["embeddings"].param_names)
    every = {n for name in blocks.names for n in blocks[name].param_names}
    assert every == {n for n, _ in model.named_parameters()}


def test_inactive_task_adapter_is_refused_not_turned_into_whole_layers():
    from fisherlab import trace_fisher
    from fisherlab.blocks import BlockMap, BlockMapError
    from fisherlab.errors import FisherlabError
    from fisherlab.tiny import tiny_adapter_model, tiny_batch

    model = tiny_adapter_model(task="xnli")
    model.active_adapters = None  # the adapter exists but is not active
    with pytest.raises(BlockMapError, match=r"xnli.*none is active.*train_adapter\('xnli'\).*mode='full'"):
        BlockMap.from_model(model)
    with pytest.raises(FisherlabError, match="none is active"):
        trace_fisher(model, [tiny_batch(seed=0)], estimator="exact")
    assert BlockMap.from_model(model, mode="full").mode == "full"  # asked for: whole layers
    assert BlockMap.from_model(model, adapter="xnli").layer_blocks  # named: the adapter's blocks


def test_other_adapters_heads_are_not_blocks():
    from fisherlab.blocks import BlockMap
    from fisherlab.tiny import tiny_adapter_model

    model = tiny_adapter_model(task="xnli")
    model.add_masked_lm_head("mlm")
    model.active_head = "xnli"
    blocks = BlockMap.from_model(model, adapter="xnli")
    assert not any(".mlm." in n for name in blocks.names for n in blocks[name].param_names)
    assert blocks.n_layers == 2


def test_tiny_model_build_is_quiet(caplog):
    from fisherlab.tiny import tiny_adapter_model

    with caplog.at_level(logging.WARNING):
        tiny_adapter_model(task="xnli")
    assert not [r for r in caplog.records if "none are activated" in r.getMessage()]


# -- commands start fast, without torch ----------------------------------------------------------------
_PROBE = """
import sys, time
from typer.testing import CliRunner
from fisherlab.cli import app
result = CliRunner().invoke(app, {argv!r})
print("EXIT", result.exit_code)
print("TORCH", "torch" in sys.modules)
print(result.output)
"""


@pytest.mark.parametrize("argv,exit_code", [
    (["--help"], 0), (["train", "--help"], 0), (["sweep", "--help"], 0),
    (["train", "missing.yaml"], 2), (["train", "--from-run", "no/such/run"], 2),
    (["sweep", "--seeds", "x"], 2), (["analyze", "no/such/runs", "--out", "x"], 2),
])
def test_commands_start_without_torch(argv, exit_code, tmp_path):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    elapsed = time.perf_counter() - start
    assert f"EXIT {exit_code}" in done.stdout, done.stdout + done.stderr
    assert "TORCH False" in done.stdout, done.stdout
    assert elapsed < 30  # loose: torch alone takes seconds on a loaded machine; typer is well under
