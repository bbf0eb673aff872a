"""FisherProbe / FisherProbeCallback: measurement timing, rows, logging, and no interference."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ddp_worker import N_LAYERS, tiny_args, tiny_dataset, tiny_model
from transformers import Trainer, default_data_collator

from fisherlab.blocks import BlockMap
from fisherlab.fisher import trace_fisher
from fisherlab.fisher.probe import FisherProbe
from fisherlab.hf import FisherProbeCallback, UnfreezeCallback, bind_callbacks
from fisherlab.runs import RunWriter


def train_weights(tmp, *, probe_mode: str | None, steps: int = 5):
    """Train with dropout on; optionally with a probe measuring every 2 steps."""
    model = tiny_model(dropout=0.1)
    callbacks = []
    if probe_mode is not None:
        callbacks.append(FisherProbeCallback(every=3, n_batches=1, mode=probe_mode, seed=5))
    trainer = Trainer(model=model, args=tiny_args(tmp, max_steps=steps), train_dataset=tiny_dataset(),
                      callbacks=callbacks)
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, callbacks


@pytest.fixture(scope="module")
def weights_without_probe(tmp_path_factory):
    return train_weights(tmp_path_factory.mktemp("off"), probe_mode=None)[0]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_probe_does_not_change_training(tmp_path, mode, weights_without_probe):
    """Bit-identical weights with and without the probe on CPU (dropout on, so RNG streams matter;
    in mode="train" the probe itself runs dropout)."""
    without = weights_without_probe
    with_probe, callbacks = train_weights(tmp_path / "on", probe_mode=mode)
    assert [m.step for m in callbacks[0].history] == [0, 3, 5]
    for name, value in without.items():
        assert torch.equal(value, with_probe[name]), name


def test_rows_logs_and_trainable_flags(tmp_path):
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    writer = RunWriter.create(tmp_path / "run", config={})
    probe = FisherProbeCallback(every=3, n_batches=2, blocks=blocks, writer=writer)
    # the probe comes first: it still sees the unfreezing decision of its step
    unfreeze = UnfreezeCallback("gradual:k=2", blocks)
    trainer = Trainer(model=model, args=tiny_args(tmp_path / "out", max_steps=7), train_dataset=tiny_dataset(),
                      callbacks=[probe, unfreeze])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "fisher.jsonl").read_text().splitlines()]
    steps = sorted({r["step"] for r in rows})
    assert steps == [0, 3, 6, 7]  # every 3 steps, plus the end
    assert all(len([r for r in rows if r["step"] == s]) == len(blocks) for s in steps)
    for row in rows:
        assert set(row) >= {"step", "block", "layer", "trace", "stderr", "trainable", "n_examples", "estimator"}
        assert row["estimator"] == "per_example" and row["n_examples"] == 8
        assert math.isfinite(row["trace"]) and row["trace"] > 0
        n_unfrozen = row["step"] // 2 + 1
        expected = row["block"] == "head" or blocks[row["block"]].layer >= N_LAYERS - n_unfrozen
        assert row["trainable"] == expected, row
    logged = [h for h in trainer.state.log_history if "fisher/mean_trainable" in h]
    assert [h["step"] for h in logged] == steps
    for h in logged:
        step_rows = [r for r in rows if r["step"] == h["step"]]
        # one definition with the report's curves: trainable *layer* blocks only, the head excluded
        counted = [r for r in step_rows if r["trainable"] and r["layer"] is not None]
        assert any(r["block"] == "head" and r["trainable"] for r in step_rows)
        mean = sum(r["trace"] for r in counted) / len(counted)
        assert h["fisher/mean_trainable"] == pytest.approx(mean)
        assert h["fisher/layer.0"] == pytest.approx(next(r["trace"] for r in step_rows if r["block"] == "layer.0"))
    assert probe.config() == {"every": 3, "estimator": "per_example", "n_batches": 2, "seed": 0,
                              "batch_size": 4, "mode": "eval"}


def test_shared_probe_measures_once_per_step(tmp_path, monkeypatch):
    import fisherlab.fisher.estimators as estimators
    from fisherlab.unfreezing import Fisher

    calls = []
    real = estimators.trace_fisher

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(estimators, "trace_fisher", counting)
    model = tiny_model()
    blocks = BlockMap.from_model(model, adapter="task")
    shared = FisherProbe(n_batches=1, seed=3)
    fun = UnfreezeCallback(Fisher(k=2, probe=shared), blocks)
    probe_cb = FisherProbeCallback(every=2, blocks=blocks, probe=shared)
    assert fun.strategy.to_string() == "fisher:k=2;estimator=per_example;n_batches=1;seed=3;mode=eval;first=top"
    trainer = Trainer(model=model, args=tiny_args(tmp_path, max_steps=4), train_dataset=tiny_dataset(),
                      callbacks=[fun, probe_cb])
    bind_callbacks(trainer)  # a plain Trainer: bind explicitly
    trainer.train()
    assert [m.step for m in probe_cb.history] == [0, 2, 4]
    assert [e.step for e in fun.schedule.events] == [0, 2]
    assert len(calls) == 3  # steps 0 and 2 measured once for both callbacks
    assert fun.schedule.events[1].scores == {b: probe_cb.history[1].traces[b] for b in blocks.layer_blocks}


def test_probe_batches_are_seeded_by_step_and_bounded():
    data = tiny_dataset(10)
    probe = FisherProbe(n_batches=40, seed=1, batch_size=4).attach(data, default_data_collator)
    first = probe.batch_indices(3)
    assert [len(b) for b in first] == [4, 4, 2]  # up to n_batches; fewer when the data is smaller
    assert sorted(i for b in first for i in b) == list(range(10))
    assert probe.batch_indices(3) == first
    assert probe.batch_indices(4) != first
    assert FisherProbe(n_batches=2, seed=2, batch_size=4).attach(data).batch_indices(3) != first[:2]
    global_state = torch.get_rng_state()
    batches = probe.batches(3)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert batches[0]["input_ids"].shape == (4, 8)


def test_probe_measurement_matches_trace_fisher_and_leaves_model_alone():
    model = tiny_model(dropout=0.1)
    model.train()
    blocks = BlockMap.from_model(model, adapter="task")
    blocks.set_trainable(model, blocks.layer_blocks[:3], False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    data = tiny_dataset(12)
    probe = FisherProbe(n_batches=2, seed=4, batch_size=3, estimator="exact").attach(data, default_data_collator)
    m = probe.measure(model, blocks, step=5)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    ref = trace_fisher(model, probe.batches(5), blocks=blocks, estimator="exact")
    model.train()
    for name in blocks.names:
        assert m.traces[name] == pytest.approx(ref.traces[name], rel=1e-12)
    assert m.n_examples == 6 and m.meta["probe_mode"] == "eval"
    assert probe.measure(model, blocks, step=5) is m  # cached per step


def test_bad_probe_settings():
    with pytest.raises(ValueError, match="every must be a positive integer"):
        FisherProbeCallback(every=0)
    with pytest.raises(ValueError, match="n_batches"):
        FisherProbe(n_batches=0)
    with pytest.raises(ValueError, match="mode must be"):
        FisherProbe(mode="sometimes")
    with pytest.raises(RuntimeError, match="no data attached"):
        FisherProbe().batch_indices(0)
    with pytest.raises(ValueError, match="map-style"):
        FisherProbe().attach(iter([1, 2]))


def test_callback_reused_in_a_second_trainer_logs_to_that_trainer(tmp_path):
    probe = FisherProbeCallback(every=2, n_batches=1, blocks="task")
    first = Trainer(model=tiny_model(), args=tiny_args(tmp_path / "a", max_steps=2), train_dataset=tiny_dataset(),
                    callbacks=[probe])
    bind_callbacks(first)  # a plain Trainer: bind explicitly
    first.train()
    second = Trainer(model=tiny_model(), args=tiny_args(tmp_path / "b", max_steps=2), train_dataset=tiny_dataset(),
                     callbacks=[probe])
    bind_callbacks(second)  # a plain Trainer: bind explicitly
    assert probe.trainer is second
    second.train()
    assert [h["step"] for h in second.state.log_history if "fisher/mean_trainable" in h] == [0, 2]
