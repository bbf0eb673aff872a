"""A measurement leaves the model exactly as found; bad inputs are clear FisherErrors."""

from __future__ import annotations

import copy

import pytest
import torch

from fisherlab.blocks import BlockMap, BlockMapError
from fisherlab.fisher import ESTIMATORS, FisherError, trace_fisher
from fisherlab.tiny import tiny_adapter_model, tiny_batch


def snapshot(model: torch.nn.Module) -> dict:
    """Everything a measurement must not change (grads cloned here, in the test only)."""
    return {
        "flags": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grads": [(n, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "versions": [p._version for p in model.parameters()],
        "data_ptrs": [p.data_ptr() for p in model.parameters()],
        "modes": [(n, m.training) for n, m in model.named_modules()],
        "rng": torch.get_rng_state(),
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for m in model.modules()],
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["flags"] == after["flags"]
    assert before["modes"] == after["modes"]
    assert before["grad_ids"] == after["grad_ids"]
    assert before["versions"] == after["versions"]            # nothing written into the weights
    assert before["data_ptrs"] == after["data_ptrs"]
    assert before["hooks"] == after["hooks"]
    assert torch.equal(before["rng"], after["rng"])
    for (name, g0), (_, g1) in zip(before["grads"], after["grads"], strict=True):
        assert (g0 is None) == (g1 is None), name
        if g0 is not None:
            assert torch.equal(g0, g1), name


def _training_run(measure_at: int | None, n_steps: int = 5) -> tuple[list[torch.Tensor], list]:
    """A few AdamW steps with dropout in train mode; optionally measure (every estimator)
    after the backward of step ``measure_at``, with gradients present."""
    measurements = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = tiny_adapter_model("bert", task_module="seq_bn", head="classification", dropout=0.2, seed=0)
        model.train()
        blocks = BlockMap.from_model(model, adapter="task")
        blocks.set_trainable(model, ["layer.0"], False)          # a frozen block: measured anyway
        next(m for m in model.modules() if isinstance(m, torch.nn.Dropout)).eval()   # mixed modes
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        batches = [tiny_batch("classification", batch_size=4, seed=s) for s in range(n_steps)]
        for step, batch in enumerate(batches):
            optimizer.zero_grad()
            model(**batch).loss.backward()
            if step == measure_at:
                before = snapshot(model)
                for estimator in ESTIMATORS:
                    measurements.append(trace_fisher(model, batches[:2], blocks, estimator=estimator))
                    assert_same(before, snapshot(model))
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()], measurements


def test_measuring_mid_training_changes_nothing(monkeypatch):
    plain, _ = _training_run(measure_at=None)
    original = copy.deepcopy

    def guarded(obj, *args, **kwargs):
        if isinstance(obj, (torch.nn.Module, torch.Tensor)):
            pytest.fail(f"a {type(obj).__name__} was deep-copied")
        return original(obj, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", guarded)
    measured, measurements = _training_run(measure_at=2)
    assert all(torch.equal(a, b) for a, b in zip(plain, measured, strict=True))   # bit-identical continued run
    for m in measurements:
        assert m.meta["mode"] == "train"
        assert m.traces["layer.0"] > 0
        assert [r["trainable"] for r in m.to_records()][:2] == [False, True]


@pytest.fixture(scope="module")
def model_and_batch():
    model = tiny_adapter_model("bert", task_module="lora", head="classification").eval()
    return model, tiny_batch("classification", batch_size=3)


def _expect_error(model, match, *args, **kwargs):
    before = snapshot(model)
    with pytest.raises(FisherError, match=match) as info:
        trace_fisher(model, *args, **kwargs)
    assert isinstance(info.value, ValueError)
    assert_same(before, snapshot(model))
    return info.value


def test_bad_inputs_are_clear_errors_without_state_change(model_and_batch):
    model, batch = model_and_batch
    _expect_error(model, "no batches", [])
    empty = {k: v[:0] for k, v in batch.items()}
    _expect_error(model, "batch 0 is empty", [empty])
    _expect_error(model, "iterable of batch dicts", batch)
    _expect_error(model, "batch 1 is a list", [batch, [1, 2]])
    _expect_error(model, "unknown estimator 'fisher'", [batch], estimator="fisher")
    _expect_error(model, "unknown output", [batch], output="regression")
    _expect_error(model, r"no adapter named 'nope'.*adapters are: task", [batch], adapter="nope")
    with pytest.raises(BlockMapError, match="adapters are: task"):
        BlockMap.from_model(model, adapter="nope")
    _expect_error(model, "has no parameters", [batch], blocks={"layer.0": []})
    _expect_error(model, "does not have", [batch], blocks={"layer.0": ["encoder.nope.weight"]})
    _expect_error(model, r"unknown block\(s\) \['layer.9'\]", [batch], block_names=["layer.9"])
    # an error in the second batch, after the first was measured: still no state change
    unlabeled = {k: v for k, v in batch.items() if k != "labels"}
    _expect_error(model, "'labels'", [batch, unlabeled], estimator="empirical")


def test_exact_refuses_impractical_class_counts():
    model = tiny_adapter_model("bert", head="mlm", vocab=40).eval()
    batch = tiny_batch("mlm", batch_size=2, vocab=40)
    error = _expect_error(model, "max_backwards=20", [batch], estimator="exact", max_backwards=20)
    assert "per_example" in str(error)


def test_model_without_logits():
    from transformers import BertModel

    from fisherlab.tiny import tiny_config

    bare = BertModel(tiny_config("bert")).eval()
    _expect_error(bare, "no logits", [tiny_batch("classification")])


@pytest.mark.parametrize("estimator", ["per_example", "batch"])
def test_nan_logits(estimator):
    model = tiny_adapter_model("bert", head="classification").eval()
    blocks = BlockMap.from_model(model, adapter="task")
    with torch.no_grad():
        dict(model.named_parameters())[blocks["head"].param_names[-1]].fill_(float("nan"))
    _expect_error(model, "NaN", [tiny_batch("classification")], blocks, estimator=estimator)


def test_progress_bar_and_no_grad_context(model_and_batch, capsys):
    model, batch = model_and_batch
    plain = trace_fisher(model, [batch, batch])
    with torch.no_grad():                                          # callers inside no_grad work too
        shown = trace_fisher(model, [batch, batch], progress=True)
    assert shown.traces == plain.traces
    assert "tr(F)" in capsys.readouterr().err


def test_a_wrapped_model_discovers_the_same_task_module_blocks():
    """DDP/DataParallel wrappers are looked through: blocks=None must not fall back to whole layers."""
    model = tiny_adapter_model("bert", lang_adapters=["en"], seed=3).eval()
    batches = [tiny_batch("classification", seed=4)]
    bare = trace_fisher(model, batches, seed=1)
    wrapped = trace_fisher(torch.nn.DataParallel(model), batches, seed=1)
    assert bare.meta["block_mode"] == wrapped.meta["block_mode"] == "adapter"
    assert wrapped.meta["task_module"] == "task" and wrapped.meta["attn_implementation"] == "eager"
    assert wrapped.traces == pytest.approx(bare.traces, rel=1e-6)
