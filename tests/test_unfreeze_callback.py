"""UnfreezeCallback inside transformers.Trainer / adapters.AdapterTrainer on a tiny 6-layer model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ddp_worker import N_LAYERS, Recorder, tiny_args, tiny_dataset, tiny_model
from transformers import Trainer

from fisherlab.blocks import BlockMap, BlockMapError
from fisherlab.hf import FisherProbeCallback, UnfreezeCallback, bind_callbacks, make_trainer_class
from fisherlab.runs import RunWriter
from fisherlab.unfreezing import StrategyError


def first_change(recorder: Recorder, blocks: BlockMap) -> dict[str, int | None]:
    """Per block: the first step s whose weights differ from step s-1's (None if never)."""
    steps = sorted(recorder.weights)
    out: dict[str, int | None] = {}
    for block in blocks.names:
        names = list(blocks[block].param_names)
        out[block] = None
        for prev, cur in zip(steps, steps[1:], strict=False):
            if any(not torch.equal(recorder.weights[prev][n], recorder.weights[cur][n]) for n in names):
                out[block] = cur
                break
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_plain_trainer_gradual_freezes_bit_identically_and_logs(tmp_path):
    model = tiny_model()
    model.train_adapter("task")  # how users first try it: everything trainable before train()
    blocks = BlockMap.from_model(model, adapter="task")
    writer = RunWriter.create(tmp_path / "run", config={"strategy": "gradual:k=2"})
    unfreeze = UnfreezeCallback("gradual:k=2", blocks, writer=writer)
    recorder = Recorder(blocks)
    trainer = Trainer(model=model, args=tiny_args(tmp_path / "out", max_steps=11), train_dataset=tiny_dataset(),
                      callbacks=[unfreeze, recorder.callback])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    # layer L-1-j unfrozen at step 2j: first weight change after that step's update
    changed = first_change(recorder, blocks)
    for j in range(N_LAYERS):
        assert changed[f"layer.{N_LAYERS - 1 - j}"] == 2 * j + 1, changed
    assert changed["head"] == 1
    # frozen means grad None before every optimizer step (so AdamW neither moves nor decays it)
    for step, grads in recorder.grads.items():
        for name, grad in grads.items():
            block = blocks.block_of(name)
            unfrozen_at = 0 if block == "head" else 2 * (N_LAYERS - 1 - blocks[block].layer)
            assert (grad is not None) == (step >= unfrozen_at), (step, name)
    # every schedulable parameter was in the optimizer from the start, weight-decay groups intact
    groups = trainer.optimizer.param_groups
    held = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, p in blocks.all_parameters(model).items():
        assert id(p) in held, name
        assert held[id(p)] == (0.0 if name.endswith("bias") else 0.1), name
    events = read_jsonl(tmp_path / "run" / "schedule.jsonl")
    assert [(e["step"], e["blocks"]) for e in events] == [(2 * j, [f"layer.{N_LAYERS - 1 - j}"])
                                                         for j in range(N_LAYERS)]
    assert all(e["strategy"] == "gradual:k=2" and e["event"] == "unfreeze" for e in events)
    logged = [h for h in trainer.state.log_history if "unfreeze/n_unfrozen" in h]
    assert [(h["step"], h["unfreeze/layer"]) for h in logged] == [(2 * j, N_LAYERS - 1 - j) for j in range(N_LAYERS)]


def test_blocks_frozen_before_trainer_are_still_registered(tmp_path):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    blocks.set_trainable(model, blocks.layer_blocks, False)  # user froze them before building the Trainer
    unfreeze = UnfreezeCallback("reverse:k=1", "task")  # adapter name: the BlockMap is discovered
    trainer = Trainer(model=model, args=tiny_args(tmp_path, max_steps=7), train_dataset=tiny_dataset(),
                      callbacks=[unfreeze])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    assert unfreeze.schedule.unfrozen == [f"layer.{i}" for i in range(N_LAYERS)]
    held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in held for p in blocks.all_parameters(model).values())


def test_add_callback_late_needs_the_mixin(tmp_path):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    blocks.set_trainable(model, blocks.layer_blocks, False)
    trainer = Trainer(model=model, args=tiny_args(tmp_path, max_steps=2), train_dataset=tiny_dataset())
    UnfreezeCallback("gradual:k=1", blocks).bind(trainer)  # a plain Trainer: bind (and add) explicitly
    with pytest.raises(StrategyError, match="not in the optimizer"):
        trainer.train()

    model = tiny_model()
    blocks.set_trainable(model, blocks.layer_blocks, False)
    trainer = make_trainer_class(Trainer)(model=model, args=tiny_args(tmp_path, max_steps=2),
                                          train_dataset=tiny_dataset())
    late = UnfreezeCallback("gradual:k=1", blocks)
    trainer.add_callback(late)
    trainer.train()
    assert late.schedule.unfrozen == ["layer.5", "layer.4"]
    assert late.trainer is trainer


def test_adapter_trainer(tmp_path):
    from adapters import AdapterTrainer

    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    recorder = Recorder(blocks)
    unfreeze = UnfreezeCallback("permutation:order=1,3,5,0,2,4;k=1", blocks)
    trainer = AdapterTrainer(model=model, args=tiny_args(tmp_path, max_steps=4), train_dataset=tiny_dataset(),
                             callbacks=[unfreeze, recorder.callback])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    assert [e.blocks for e in unfreeze.schedule.events] == [["layer.1"], ["layer.3"], ["layer.5"], ["layer.0"]]
    changed = first_change(recorder, blocks)
    assert (changed["layer.1"], changed["layer.3"], changed["layer.5"], changed["layer.0"]) == (1, 2, 3, 4)
    assert changed["layer.2"] is None and changed["layer.4"] is None


def test_gradient_checkpointing_non_reentrant_with_frozen_blocks(tmp_path):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    recorder = Recorder(blocks)
    args = tiny_args(tmp_path, max_steps=3, gradient_checkpointing=True,
                     gradient_checkpointing_kwargs={"use_reentrant": False})
    trainer = Trainer(model=model, args=args, train_dataset=tiny_dataset(),
                      callbacks=[UnfreezeCallback("gradual:k=1", blocks), recorder.callback])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    assert model.is_gradient_checkpointing
    changed = first_change(recorder, blocks)
    assert (changed["layer.5"], changed["layer.4"], changed["layer.3"]) == (1, 2, 3)
    assert all(changed[f"layer.{i}"] is None for i in range(3))
    assert all(g is not None for n, g in recorder.grads[2].items() if blocks.block_of(n) == "layer.3")


def test_fun_with_the_real_probe_picks_a_lower_layer_with_a_larger_trace(tmp_path):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    with torch.no_grad():  # inflate layer 1's adapter: its tr(F) becomes the largest
        for p in blocks.parameters(model, "layer.1").values():
            p.mul_(8.0)
    unfreeze = UnfreezeCallback("fisher:k=1;n_batches=2;estimator=per_example;first=fisher", blocks)
    trainer = Trainer(model=model, args=tiny_args(tmp_path, max_steps=2), train_dataset=tiny_dataset(),
                      callbacks=[unfreeze])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    first = unfreeze.schedule.events[0]
    assert first.step == 0 and first.blocks == ["layer.1"]
    assert max(first.scores, key=first.scores.get) == "layer.1"
    assert set(first.scores) == set(blocks.layer_blocks)  # frozen blocks measured too
    second = unfreeze.schedule.events[1]
    assert second.blocks == [max((b for b in blocks.layer_blocks if b != "layer.1"), key=second.scores.get)]


def run_resumable(tmp: Path, *, resume_from: int | None = None, source: Path | None = None):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    run_dir = tmp / "run"
    if resume_from is None:
        writer = RunWriter.create(run_dir, config={"strategy": "fisher:k=2"})
    else:
        shutil.copytree(source / "run", run_dir)
        writer = RunWriter.resume(run_dir, from_step=resume_from)
    unfreeze = UnfreezeCallback("fisher:k=2;n_batches=1", blocks, writer=writer)
    probe = FisherProbeCallback(every=3, n_batches=1, blocks=blocks, writer=writer)
    args = tiny_args(tmp / "out", max_steps=10, save_strategy="steps", save_steps=4)
    trainer = Trainer(model=model, args=args, train_dataset=tiny_dataset(), callbacks=[probe, unfreeze])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    checkpoint = None if resume_from is None else str(source / "out" / f"checkpoint-{resume_from}")
    trainer.train(resume_from_checkpoint=checkpoint)
    writer.finish()
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    return weights, read_jsonl(run_dir / "fisher.jsonl"), read_jsonl(run_dir / "schedule.jsonl"), unfreeze


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    full_w, full_fisher, full_schedule, full_cb = run_resumable(tmp_path / "a")
    assert (tmp_path / "a" / "out" / "checkpoint-4").is_dir()
    # a decision step (4) that is not a probe step
    res_w, res_fisher, res_schedule, res_cb = run_resumable(tmp_path / "b", resume_from=4, source=tmp_path / "a")
    assert [e["step"] for e in full_schedule] == [0, 2, 4, 6, 8]
    assert sorted({r["step"] for r in full_fisher}) == [0, 3, 6, 9, 10]
    assert res_schedule == full_schedule
    assert res_fisher == full_fisher
    assert res_cb.schedule.unfrozen == full_cb.schedule.unfrozen
    for name, value in full_w.items():
        assert torch.equal(value, res_w[name]), name


def test_bad_input_fails_before_training(tmp_path):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    args = tiny_args(tmp_path, max_steps=2)
    with pytest.raises(BlockMapError, match="no adapter named 'nope'"):
        Trainer(model=model, args=args, train_dataset=tiny_dataset(), callbacks=[UnfreezeCallback("gradual:k=1", "nope")])
    with pytest.raises(StrategyError, match="not a permutation"):
        UnfreezeCallback("permutation:order=0,1,2;k=1", blocks)
    with pytest.raises(StrategyError, match="not a permutation"):  # discovered blocks: checked at Trainer init
        Trainer(model=model, args=args, train_dataset=tiny_dataset(),
                callbacks=[UnfreezeCallback("permutation:order=0,1,2;k=1", "task")])
    with pytest.raises(StrategyError, match="unknown unfreezing strategy"):
        UnfreezeCallback("graduel:k=1", blocks)
    with pytest.raises(StrategyError, match="positive integer"):
        UnfreezeCallback("gradual:k=0", blocks)
    with pytest.raises(StrategyError, match="BlockMap or the task adapter"):
        UnfreezeCallback("gradual:k=1", blocks=None)


def test_ddp_without_find_unused_parameters_is_refused():
    cb = UnfreezeCallback("gradual:k=1", "task")
    args = SimpleNamespace(world_size=2, ddp_find_unused_parameters=False, gradient_checkpointing=False)
    with pytest.raises(StrategyError, match="ddp_find_unused_parameters=True"):
        cb._check_ddp(args)
    args = SimpleNamespace(world_size=2, ddp_find_unused_parameters=None, gradient_checkpointing=True)
    with pytest.raises(StrategyError, match="gradient checkpointing"):
        cb._check_ddp(args)
    cb._check_ddp(SimpleNamespace(world_size=2, ddp_find_unused_parameters=None, gradient_checkpointing=False))
    UnfreezeCallback("standard", "task")._check_ddp(args)  # nothing is ever frozen: fine
