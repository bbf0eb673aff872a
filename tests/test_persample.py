"""Per-example squared gradient norms (fisherlab.fisher.persample) against a float64 oracle.

The oracle is the definition: from the *same* batch forward, one
``torch.autograd.grad`` of each example's scalar ``s_i`` w.r.t. the block's
parameters, sum of squares. Every fast path (materialise, Gram, LoRA, LayerNorm,
Embedding, the per-example loop fallback) must match it to 1e-6 relative.
"""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
from torch import nn

from fisherlab.blocks import BlockMap
from fisherlab.fisher.persample import (
    FallbackWarning,
    PerExampleGradNorms,
    linear_sq_norms,
    register_sampler,
)
from fisherlab.fisher.persample import registry as persample
from fisherlab.tiny import tiny_adapter_model, tiny_batch

RTOL = 1e-6
B = 3


def example_scalars(outputs, batch: dict, head: str, seed: int = 0) -> torch.Tensor:
    """[B] per-example log-probabilities of fixed random labels (token heads: summed over tokens)."""
    gen = torch.Generator().manual_seed(seed)
    if head == "qa":
        mask = batch["attention_mask"].bool()
        total = 0
        for logits in (outputs.start_logits, outputs.end_logits):
            logp = torch.log_softmax(logits.masked_fill(~mask, float("-inf")), -1)
            pick = torch.randint(0, 2, (logits.shape[0],), generator=gen)
            total = total + logp.gather(1, pick[:, None]).squeeze(1)
        return total
    logits = outputs.logits
    logp = torch.log_softmax(logits, -1)
    if head == "tagging":
        labels = torch.randint(0, logits.shape[-1], logits.shape[:-1], generator=gen)
        per_token = logp.gather(-1, labels[..., None]).squeeze(-1)
        return (per_token * batch["attention_mask"]).sum(-1)
    labels = torch.randint(0, logits.shape[-1], (logits.shape[0],), generator=gen)
    return logp.gather(1, labels[:, None]).squeeze(1)


def oracle(model, blocks: BlockMap, batch: dict, head: str) -> dict[str, torch.Tensor]:
    """Per block, per example: ||d s_i / d theta_block||^2 by one autograd.grad per example."""
    params = {name: list(blocks.parameters(model, name).values()) for name in blocks.names}
    flags = {id(p): p.requires_grad for ps in params.values() for p in ps}
    for ps in params.values():
        for p in ps:
            p.requires_grad_(True)
    try:
        scalars = example_scalars(model(**batch), batch, head)
        result = {name: torch.zeros(len(scalars), dtype=torch.float64) for name in params}
        for i in range(len(scalars)):
            for name, ps in params.items():
                grads = torch.autograd.grad(scalars[i], ps, retain_graph=True, allow_unused=True)
                result[name][i] = sum(float(g.double().square().sum()) for g in grads if g is not None)
    finally:
        for ps in params.values():
            for p in ps:
                p.requires_grad_(flags[id(p)])
    return result


@pytest.fixture
def no_loop(monkeypatch):
    """Fail if the slow per-example loop is used: the fast paths must cover these models."""
    def refuse(*args, **kwargs):
        raise AssertionError("the per-example loop fallback was used")

    monkeypatch.setattr(PerExampleGradNorms, "_loop_norms", refuse)


def measure(model, blocks, batch, head, method="auto", retain_graph=False):
    with PerExampleGradNorms(model, blocks, method=method) as probe:
        scalars = example_scalars(model(**batch), batch, head)
        return probe.sq_norms(scalars.sum(), batch_size=len(scalars), retain_graph=retain_graph)


def assert_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == torch.float64 and got[name].shape == want[name].shape
        assert (want[name] > 0).all(), f"oracle gives a zero norm for {name}: test would be vacuous"
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=0, msg=lambda m, n=name: f"{n}: {m}")


def model_and_blocks(arch, task_module, head="classification", attn="eager", mode=None, **kw):
    model = tiny_adapter_model(arch, task_module=task_module, head=head, attn_implementation=attn,
                               dtype=torch.float64, **kw)
    adapter = None if task_module is None else "task"
    return model, BlockMap.from_model(model, adapter=adapter, mode=mode or ("full" if adapter is None else "auto"))


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta", "deberta-v2"])
@pytest.mark.parametrize("task_module", ["seq_bn", "lora"])
def test_adapter_and_lora_match_oracle(arch, task_module, no_loop):
    """sdpa and eager, train and eval mode (dropout 0), padded batches, auto/materialise/gram."""
    # transformers has no sdpa path for DeBERTa-v2 (it refuses the setting).
    for attn in ("eager",) if arch == "deberta-v2" else ("sdpa", "eager"):
        model, blocks = model_and_blocks(arch, task_module, attn=attn)
        batch = tiny_batch("classification", batch_size=B, seq_len=7, seed=1)
        assert (batch["attention_mask"] == 0).any()
        for train in (True, False):
            model.train(train)
            want = oracle(model, blocks, batch, "classification")
            for method in ("auto", "materialise", "gram") if train else ("auto",):
                assert_close(measure(model, blocks, batch, "classification", method), want)
            assert model.training == train


@pytest.mark.parametrize("head", ["multiple_choice", "qa", "tagging"])
def test_heads_group_rows_and_tokens(head, no_loop):
    """Multiple choice rows [B*g] are grouped per example; token heads sum tokens before squaring."""
    model, blocks = model_and_blocks("bert", "seq_bn", head=head, num_choices=3)
    batch = tiny_batch(head, batch_size=B, seq_len=6, num_choices=3, seed=2)
    want = oracle(model, blocks, batch, head)
    for method in ("materialise", "gram"):
        assert_close(measure(model, blocks, batch, head, method), want)


@pytest.mark.parametrize("arch", ["bert", "deberta-v2"])
def test_full_layer_blocks_with_layernorm_and_embeddings(arch, monkeypatch):
    """Full fine-tuning blocks: Linear + LayerNorm per layer, an embeddings block (Embedding).

    DeBERTa reads rel_embeddings.weight directly and applies pos_key/pos_query projections
    to a batch-shared tensor: those parameters must go to the (exact) loop, with a warning.
    """
    model, every_block = model_and_blocks(arch, None)
    assert "embeddings" in every_block.names
    # the pooler is its own block and feeds no adapters classification head: its norms are exactly 0
    # (a vacuous comparison), so the other blocks are compared
    blocks = BlockMap([every_block[n] for n in every_block.names if n != "pooler"], mode=every_block.mode,
                      task_name=every_block.task_name, layer_prefix=every_block.layer_prefix)
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=3)
    want = oracle(model, blocks, batch, "classification")
    for method in ("materialise", "gram"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monkeypatch.setattr(persample, "_WARNED", set())
            got = measure(model, blocks, batch, "classification", method)
        assert_close(got, want)
        fallbacks = [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]
        if arch == "deberta-v2":
            assert any("rel_embeddings" in m for m in fallbacks), fallbacks
            assert any("pos_key_proj" in m for m in fallbacks), fallbacks
        else:
            assert fallbacks == []


def test_loop_method_matches_oracle():
    """The exact fallback; hidden states among the outputs must not be counted twice."""
    model, blocks = model_and_blocks("xlm-roberta", "lora")
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=4)
    want = oracle(model, blocks, batch, "classification")
    assert_close(measure(model, blocks, batch, "classification", "loop"), want)
    with PerExampleGradNorms(model, blocks, method="loop") as probe:
        outputs = model(**batch, output_hidden_states=True)
        assert len(outputs.hidden_states) > 1
        got = probe.sq_norms(example_scalars(outputs, batch, "classification").sum(), B)
    assert_close(got, want)


class ScaledLinear(nn.Module):
    """A module type no sampler knows: its parameters must go to the loop fallback."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x):
        return torch.tanh(x @ self.weight.t() * 1.5 + self.bias)


def test_unregistered_module_falls_back_to_loop_with_one_warning(monkeypatch):
    monkeypatch.setattr(persample, "_WARNED", set())
    model, _ = model_and_blocks("bert", "seq_bn")
    head = model.heads["task"]
    index = next(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
    head[index] = ScaledLinear(head[index])
    blocks = BlockMap.from_model(model, adapter="task")
    assert any("heads" in n for n in blocks["head"].param_names)
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=5)
    want = oracle(model, blocks, batch, "classification")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = measure(model, blocks, batch, "classification")
        again = measure(model, blocks, batch, "classification")
    named = [w for w in caught if issubclass(w.category, FallbackWarning) and "ScaledLinear" in str(w.message)]
    assert len(named) == 1
    assert_close(got, want)
    assert_close(again, want)


def test_registered_sampler_is_used(monkeypatch, no_loop):
    """register_sampler(type)(fn) routes that type's parameters to fn (no fallback warning)."""
    monkeypatch.setattr(persample, "_SAMPLERS", dict(persample._SAMPLERS))
    monkeypatch.setattr(persample, "_WARNED", set())
    seen = []

    @register_sampler(ScaledLinear)
    def scaled_linear(module, calls, batch_size, method):
        seen.append(len(calls))
        x = torch.cat([c.args[0].reshape(batch_size, -1, c.args[0].shape[-1]) for c in calls], 1)
        y = torch.cat([c.output.reshape(batch_size, -1, c.output.shape[-1]) for c in calls], 1)
        d = torch.cat([c.grad.reshape(batch_size, -1, c.grad.shape[-1]) for c in calls], 1) * (1 - y.square())
        return {"weight": linear_sq_norms(x, d * 1.5, method), "bias": d.sum(1).square().sum(1)}

    model, _ = model_and_blocks("bert", "seq_bn")
    head = model.heads["task"]
    index = next(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
    head[index] = ScaledLinear(head[index])
    blocks = BlockMap.from_model(model, adapter="task")
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = measure(model, blocks, batch, "classification")
    assert seen == [1]
    assert_close(got, oracle(model, blocks, batch, "classification"))


def test_lora_dropout_and_stacked_language_adapter(no_loop):
    """LoRA with dropout in train mode: norms use the dropped input the forward really used."""
    from adapters import LoRAConfig

    model = tiny_adapter_model("bert", task_module=None, dtype=torch.float64, lang_adapters=["en"])
    model.add_adapter("task", config=LoRAConfig(r=2, alpha=4, dropout=0.3, attn_matrices=["q", "v"]))
    model.train_adapter("task")
    model.to(torch.float64)
    from adapters.composition import Stack
    model.active_adapters = Stack("en", "task")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    blocks = BlockMap.from_model(model, adapter="task", head="task")
    assert blocks.mode == "lora"
    assert any(isinstance(m, nn.Dropout) for n, m in model.named_modules() if n.endswith("lora_dropout"))
    model.train()
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=7)
    # Same dropout masks in probe and oracle: same seed before each forward.
    torch.manual_seed(123)
    want = oracle(model, blocks, batch, "classification")
    torch.manual_seed(123)
    got = measure(model, blocks, batch, "classification")
    assert_close(got, want)


def test_state_is_restored_and_nothing_is_kept():
    model, blocks = model_and_blocks("bert", "seq_bn")
    model.train()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    hooks = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()}
    assert not all(flags.values()) and any(flags.values())
    # Measure a frozen and a trainable block at once.
    blocks.set_trainable(model, [blocks.layer_name(0)], False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=8)
    captured = {}
    linear = next(m for n, m in model.named_modules() if isinstance(m, nn.Linear) and "adapter_up" in n)
    def remember(module, args, out):
        captured.setdefault("ref", weakref.ref(out))

    own = linear.register_forward_hook(remember)
    try:
        with PerExampleGradNorms(model, blocks) as probe:
            assert all(p.requires_grad for name in blocks.names for p in blocks.parameters(model, name).values())
            scalars = example_scalars(model(**batch), batch, "classification")
            first = probe.sq_norms(scalars.sum(), B, retain_graph=True)
            second = probe.sq_norms(scalars.sum(), B, retain_graph=True)
            for name in first:
                assert torch.equal(first[name], second[name])
                assert (first[name] > 0).all()
            probe.clear()
            del scalars
            gc.collect()
            assert captured["ref"]() is None, "a recorded activation outlived clear()"
            captured.clear()
            scalars = example_scalars(model(**batch), batch, "classification")
            probe.sq_norms(scalars.sum(), B, retain_graph=True)
            del scalars
            gc.collect()
            assert captured["ref"]() is not None   # kept while the graph may be reused
        gc.collect()
        assert captured["ref"]() is None, "a recorded activation outlived exit"
    finally:
        own.remove()
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()} == hooks
    assert model.training


def test_flags_restored_on_exception():
    model, blocks = model_and_blocks("bert", "lora")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    blocks.set_trainable(model, blocks.names, False)
    frozen = {n: p.requires_grad for n, p in model.named_parameters()}
    assert frozen != flags
    hooks = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()}
    with pytest.raises(RuntimeError, match="boom"):
        with PerExampleGradNorms(model, blocks):
            raise RuntimeError("boom")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == frozen
    assert {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()} == hooks


def test_block_names_subset_and_bad_input():
    model, blocks = model_and_blocks("bert", "seq_bn")
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=9)
    with PerExampleGradNorms(model, blocks, block_names=["head"]) as probe:
        scalars = example_scalars(model(**batch), batch, "classification")
        with pytest.raises(ValueError, match="one element"):
            probe.sq_norms(scalars, B)
        got = probe.sq_norms(scalars.sum(), B)
    assert set(got) == {"head"}
    with pytest.raises(ValueError, match="unknown method"):
        PerExampleGradNorms(model, blocks, method="fast")


def test_linear_kernels_agree():
    gen = torch.Generator().manual_seed(0)
    x, d = torch.randn(4, 5, 7, generator=gen, dtype=torch.float64), torch.randn(4, 5, 3, generator=gen, dtype=torch.float64)
    want = torch.stack([(d[b].t() @ x[b]).square().sum() for b in range(4)])
    for method in ("materialise", "gram", "auto"):
        torch.testing.assert_close(linear_sq_norms(x, d, method), want)


def test_gradient_checkpointing_non_reentrant(no_loop):
    """Recomputation inside the engine's own autograd.grad must not be recorded twice."""
    model, blocks = model_and_blocks("bert", "seq_bn")
    model.train()
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=10)
    want = oracle(model, blocks, batch, "classification")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert_close(measure(model, blocks, batch, "classification"), want)


def test_in_place_change_after_the_hook_is_an_error():
    model, blocks = model_and_blocks("bert", "seq_bn")
    batch = tiny_batch("classification", batch_size=B, seq_len=6, seed=11)
    linear = next(m for n, m in model.named_modules() if isinstance(m, nn.Linear) and "adapter_up" in n)
    with PerExampleGradNorms(model, blocks) as probe:
        def scale_in_place(module, args, out):
            out.mul_(1.0)

        handle = linear.register_forward_hook(scale_in_place)
        try:
            scalars = example_scalars(model(**batch), batch, "classification")
        finally:
            handle.remove()
        with pytest.raises(RuntimeError, match="in place"):
            probe.sq_norms(scalars.sum(), B)
        probe.clear()


def test_two_forwards_sum_per_example_before_squaring(no_loop):
    """s_i = s_i(batch a) + s_i(batch b): every module ran twice; its calls are one example's rows."""
    model, blocks = model_and_blocks("bert", "lora")
    a = tiny_batch("classification", batch_size=B, seq_len=6, seed=12)
    b = tiny_batch("classification", batch_size=B, seq_len=6, seed=13)
    params = {name: list(blocks.parameters(model, name).values()) for name in blocks.names}
    scalars = example_scalars(model(**a), a, "classification") + example_scalars(model(**b), b, "classification", seed=1)
    want = {name: torch.tensor([sum(float(g.square().sum()) for g in torch.autograd.grad(
        scalars[i], ps, retain_graph=True)) for i in range(B)], dtype=torch.float64) for name, ps in params.items()}
    del scalars
    for method in ("materialise", "gram"):
        with PerExampleGradNorms(model, blocks, method=method) as probe:
            scalars = (example_scalars(model(**a), a, "classification")
                       + example_scalars(model(**b), b, "classification", seed=1))
            got = probe.sq_norms(scalars.sum(), B)
        assert_close(got, want)
