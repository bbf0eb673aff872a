"""The probe and the callbacks with wrapped and compiled models, gradient checkpointing and
gradient accumulation (DDP: tests/test_ddp.py).

``torch.compile`` is tested with ``backend="eager"`` (Dynamo traces the model, no C
compiler needed on a CPU test machine): the probe measures the bare module it wraps,
eagerly, so a compiled model gives bit-identical measurements.
"""

from __future__ import annotations

import pytest
import torch
from ddp_worker import tiny_args, tiny_dataset, tiny_model
from transformers import Trainer

from fisherlab.blocks import BlockMap
from fisherlab.fisher import FisherError, trace_fisher
from fisherlab.hf import FisherProbeCallback, UnfreezeCallback, bind_callbacks
from fisherlab.tiny import tiny_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def _batches(n: int = 2) -> list[dict]:
    return [tiny_batch("classification", batch_size=4, seq_len=8, seed=20 + i) for i in range(n)]


@pytest.mark.parametrize("how", ["wrapper", "in_place"])
def test_compiled_model_measures_like_the_bare_model(how):
    model = tiny_model(seed=0)
    blocks = BlockMap.from_model(model, adapter="task")
    batches = _batches()
    bare = trace_fisher(model, batches, blocks, estimator="exact")
    if how == "wrapper":
        compiled = torch.compile(model, backend="eager")
    else:
        compiled = model
        compiled.compile(backend="eager")
        impl = compiled._compiled_call_impl
        assert impl is not None
    with torch.no_grad():  # the compiled forward itself runs (and agrees)
        ref = model._call_impl(**{k: v for k, v in batches[0].items() if k != "labels"}).logits \
            if how == "in_place" else model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits
        torch.testing.assert_close(compiled(**{k: v for k, v in batches[0].items() if k != "labels"}).logits, ref)
    measured = trace_fisher(compiled, batches, blocks, estimator="exact")
    assert measured.traces == bare.traces
    if how == "in_place":
        assert compiled._compiled_call_impl is impl  # put back


def _plain_model():
    """A plain transformers model (adapters models refuse reentrant checkpointing themselves)."""
    from transformers import BertForSequenceClassification

    from fisherlab.tiny import tiny_config

    torch.manual_seed(0)
    config = tiny_config("bert", num_layers=3)
    config.num_labels = 3
    return BertForSequenceClassification(config)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_in_train_mode(reentrant):
    """HF checkpointing is active in train mode only (the probe's default mode is eval). Non-reentrant:
    the same tr(F) as without; reentrant (torch.autograd.grad cannot run through it, and the
    per-example hooks would see no graph): a clear error instead of zero traces."""
    model = _plain_model()
    blocks = BlockMap.from_model(model)
    batches = _batches()
    model.train()
    plain = trace_fisher(model, batches, blocks, estimator="exact")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model.train()
    if reentrant:
        with pytest.raises(FisherError, match="use_reentrant"):
            trace_fisher(model, batches, blocks, estimator="exact")
        model.eval()  # no checkpointing in eval mode: fine
        assert trace_fisher(model, batches, blocks, estimator="exact").traces == pytest.approx(plain.traces, rel=1e-6)
        return
    checkpointed = trace_fisher(model, batches, blocks, estimator="exact")
    for name in blocks.names:
        assert checkpointed.traces[name] == pytest.approx(plain.traces[name], rel=1e-6), name


def _train(tmp_path, strategy: str, **args):
    args.setdefault("max_grad_norm", 0.0)  # see test_gradient_accumulation_counts_optimizer_steps
    model = tiny_model(seed=0)
    unfreeze = UnfreezeCallback(strategy, "task")
    probe = FisherProbeCallback(every=2, n_batches=2, estimator="exact", batch_size=4, blocks="task")
    trainer = Trainer(model=model, args=tiny_args(tmp_path, **args), train_dataset=tiny_dataset(64),
                      callbacks=[unfreeze, probe])
    bind_callbacks(trainer)
    trainer.train()
    return trainer, unfreeze, probe


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    """Batch 4 x 2 accumulation steps vs batch 8: the same optimizer steps (decisions at 0, 2, 4 and
    probe rows at 0, 2, 4, 5), the same decisions. (The adapters head ignores num_items_in_batch, so
    the Trainer's accumulated gradient is twice the batch-8 one: no clipping, and AdamW's update
    is nearly scale-invariant, so the weights stay close: traces within 1% in our runs.)"""
    strategy = "fisher:k=2;n_batches=2;estimator=exact;batch_size=4"
    one, u1, p1 = _train(tmp_path / "one", strategy, per_device_train_batch_size=8, max_steps=5)
    two, u2, p2 = _train(tmp_path / "two", strategy, per_device_train_batch_size=4,
                         gradient_accumulation_steps=2, max_steps=5)
    assert one.state.global_step == two.state.global_step == 5
    assert [e.step for e in u2.schedule.events] == [e.step for e in u1.schedule.events] == [0, 2, 4]
    assert [e.blocks for e in u2.schedule.events] == [e.blocks for e in u1.schedule.events]
    assert [m.step for m in p2.history] == [m.step for m in p1.history] == [0, 2, 4, 5]
    assert p1.history[0].traces == p2.history[0].traces  # the same weights before the first step
    for a, b in zip(p1.history[1:], p2.history[1:], strict=True):  # close weights (measured: <= 1% apart)
        assert a.traces == pytest.approx(b.traces, rel=3e-2)


def test_trainer_torch_compile_with_probe_and_fun(tmp_path):
    """TrainingArguments(torch_compile=True): the Trainer trains the compiled model; the callbacks get
    the bare one and decide at the same steps as without compilation."""
    strategy = "fisher:k=2;n_batches=2;estimator=exact;batch_size=4"
    plain, u1, p1 = _train(tmp_path / "plain", strategy, max_steps=4)
    compiled, u2, p2 = _train(tmp_path / "compiled", strategy, max_steps=4, torch_compile=True,
                              torch_compile_backend="eager")
    assert type(compiled.model_wrapped).__name__ == "OptimizedModule"
    assert [(e.step, e.blocks) for e in u2.schedule.events] == [(e.step, e.blocks) for e in u1.schedule.events]
    assert [m.step for m in p2.history] == [m.step for m in p1.history]
    assert p2.history[0].traces == p1.history[0].traces


@pytest.mark.parametrize("accumulate_with", ["factory", "attach"])
def test_adapters_head_loss_is_averaged_over_accumulation_steps(tmp_path, accumulate_with):
    """Batch 4 x 2 accumulation steps must update like batch 8. The adapters head takes **kwargs
    but ignores num_items_in_batch, so without fix_loss_kwargs the Trainer skipped its division by
    the accumulation steps and the update was twice as large (SGD makes the factor visible)."""
    from adapters import AdapterTrainer

    from fisherlab.hf import make_trainer_class

    def trained(**args):
        model = tiny_model(seed=0)
        model.train_adapter("task")
        targs = tiny_args(tmp_path / str(len(args)), optim="sgd", weight_decay=0.0, max_grad_norm=0.0,
                          max_steps=1, **args)
        if accumulate_with == "factory":
            trainer = make_trainer_class(AdapterTrainer)(model=model, args=targs, train_dataset=tiny_dataset(8))
        else:
            from fisherlab.hf import FisherlabRun

            trainer = Trainer(model=model, args=targs, train_dataset=tiny_dataset(8))
            FisherlabRun(tmp_path / f"run{len(args)}", strategy="standard", probe_every=0).attach(trainer)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        trainer.train()
        return {n: p.detach() - before[n] for n, p in model.named_parameters() if p.requires_grad}

    whole = trained(per_device_train_batch_size=8)  # the SGD update of one step on 8 examples
    halves = trained(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    # Tensors whose update is far above float32 rounding of the weights (the zero-initialised
    # adapter up-projection leaves the down-projection's first update at ~1e-7): the update of
    # 4 x 2 accumulation equals batch 8's up to summation order; the bug made it twice as large.
    compared = [name for name, update in whole.items() if update.abs().max() > 1e-4]
    assert compared
    for name in compared:
        ratio = (halves[name].norm() / whole[name].norm()).item()
        assert ratio == pytest.approx(1.0, abs=1e-3), (name, ratio)
        assert torch.allclose(halves[name], whole[name], rtol=1e-2, atol=1e-6), name
