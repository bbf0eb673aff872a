"""Mixed precision: tr(F), the probe, FUN and the regularisers under torch.autocast (bf16, fp16).

Tolerances. bf16 keeps 8 significant bits (unit roundoff 2**-8 ~ 3.9e-3), fp16 11 bits
(2**-11 ~ 4.9e-4). Under autocast every matmul input is rounded once (products and sums
then run in float32), so each activation and each backward gradient carries a relative
error of a few roundoffs; a squared norm doubles it and the errors of the tiny model's
few layers add up. We assert per-block agreement with the float32 measurement within
5e-2 (bf16) and 1e-2 (fp16) -- about ten roundoffs -- and that the difference is not
zero (autocast really ran). Independently, the engine's own accumulation is checked to be
float32-exact: on the 16-bit activations and gradients the model produced, the norms must
match a float64 oracle within 1e-5 (a bf16 accumulation would be off by ~1e-2).
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings

import pytest
import torch
from ddp_worker import tiny_args, tiny_dataset, tiny_model
from transformers import Trainer, default_data_collator

from fisherlab.blocks import BlockMap
from fisherlab.fisher import trace_fisher
from fisherlab.fisher.persample import PerExampleGradNorms
from fisherlab.fisher.precision import (
    NonFiniteWarning,
    PrecisionRecorder,
    autocast_forward,
    full_precision,
)
from fisherlab.fisher.probe import FisherProbe
from fisherlab.hf import FisherProbeCallback, UnfreezeCallback, bind_callbacks
from fisherlab.hf.precision import trainer_precision
from fisherlab.regularisers import Consistency, FisherPenalty
from fisherlab.regularisers.views import Dropout, ParameterNoise
from fisherlab.runs import RunWriter
from fisherlab.tiny import tiny_batch

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}
NAMES = {torch.bfloat16: "bf16-autocast", torch.float16: "fp16-autocast"}


def _model():
    model = tiny_model(seed=0)
    return model, BlockMap.from_model(model, adapter="task")


def _batches(n: int = 2, size: int = 4) -> list[dict]:
    return [tiny_batch("classification", batch_size=size, seq_len=8, seed=10 + i) for i in range(n)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("estimator", ["exact", "empirical"])  # no label sampling: same labels in both runs
def test_trace_fisher_under_autocast_agrees_with_float32(dtype, estimator):
    model, blocks = _model()
    batches = _batches()
    full = trace_fisher(model, batches, blocks, estimator=estimator)
    with torch.autocast("cpu", dtype):
        low = trace_fisher(model, batches, blocks, estimator=estimator)
    assert full.meta["precision"] == "float32" and full.meta["dtype"] == "float32"
    assert low.meta["precision"] == NAMES[dtype]
    assert "nonfinite" not in low.meta
    differs = False
    for name in blocks.names:
        assert low.traces[name] == pytest.approx(full.traces[name], rel=TOLERANCE[dtype]), name
        differs |= low.traces[name] != full.traces[name]
    assert differs, "autocast did not change anything: was it on?"
    rows = low.to_records(with_estimator=True)
    assert {r["precision"] for r in rows} == {NAMES[dtype]} and not any("nonfinite" in r for r in rows)


def test_engine_accumulates_in_float32_inside_autocast():
    """Norms of the bf16 activations/gradients a Linear produced under autocast equal a float64
    oracle of those same 16-bit values: the engine's products do not run in bf16."""
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 48))
    x = torch.randn(6, 5, 64)
    w = torch.randn(6, 5, 48)
    with torch.autocast("cpu", torch.bfloat16), PerExampleGradNorms(layer, {"w": ["0.weight", "0.bias"]},
                                                                     method="materialise") as engine:
        out = layer(x)
        assert out.dtype == torch.bfloat16
        norms = engine.sq_norms((out.float() * w).sum(), 6)["w"]
    # d(sum out * w)/d out = w rounded to bf16; the engine records the Linear's input before
    # F.linear's autocast rounds it, so the norms use the float32 input (closer to float32 tr(F))
    xs, ds = x.double(), w.to(torch.bfloat16).double()
    oracle = torch.einsum("bri,bro->bio", xs, ds).pow(2).sum((1, 2)) + ds.sum(1).pow(2).sum(1)
    assert norms.dtype == torch.float64
    torch.testing.assert_close(norms, oracle, rtol=1e-5, atol=0)


def test_nonfinite_traces_warn_and_are_flagged(tmp_path):
    """fp16 overflow in the model's own backward: the logits are finite, but d log p / d h of the
    head's hidden layer is 6e4 * (1 - (-1)) = 1.2e5 > 65504 (labels against a confident
    prediction), so the 16-bit gradient is inf. A NonFiniteWarning, meta and row flags."""
    model, blocks = _model()
    dense, out = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "heads" in n][-2:]
    with torch.no_grad():
        dense.weight.mul_(1e-5)
        dense.bias.zero_()
        out.weight.zero_()
        out.weight[0], out.weight[1] = 6e4, -6e4
        out.bias.copy_(torch.tensor([0.0, 20.0, 0.0]))
    batch = _batches(1)[0]
    batch["labels"][:] = 0
    with torch.autocast("cpu", torch.float16), pytest.warns(NonFiniteWarning, match="fp16"):
        m = trace_fisher(model, [batch], blocks, estimator="empirical")
    assert m.meta["nonfinite"] is True and m.meta["nonfinite_blocks"] == blocks.names
    rows = m.to_records(with_estimator=True)
    flagged = [r["block"] for r in rows if r.get("nonfinite")]
    assert flagged == m.meta["nonfinite_blocks"]
    assert all(not math.isfinite(r["trace"]) for r in rows if r.get("nonfinite"))
    writer = RunWriter.create(tmp_path / "run", config={})
    writer.log_fisher(rows, 0)
    written = [json.loads(line) for line in (tmp_path / "run" / "fisher.jsonl").read_text().splitlines()]
    assert [r["block"] for r in written if r.get("nonfinite")] == flagged
    # in float32 the same model is finite: the flag is about the precision, not the model
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        assert "nonfinite" not in trace_fisher(model, [batch], blocks, estimator="empirical").meta


def test_loss_scale_never_reaches_the_measurement():
    """A GradScaler-scaled training backward leaves scaled grads in .grad; the measurement does its
    own backward of log p (never reads .grad), so it is identical before and after, and .grad is kept."""
    model, blocks = _model()
    batches = _batches(1)
    before = trace_fisher(model, batches, blocks, estimator="exact")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    with torch.autocast("cpu", torch.float16):
        loss = model(**batches[0]).loss
    scaler.scale(loss).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads and scaler.get_scale() == 2.0 ** 16
    after = trace_fisher(model, batches, blocks, estimator="exact")
    assert after.traces == before.traces
    for n, p in model.named_parameters():
        if n in grads:
            assert torch.equal(p.grad, grads[n]), n


def _trainer(tmp_path, callbacks, **args):
    model = tiny_model(seed=0)
    trainer = Trainer(model=model, args=tiny_args(tmp_path / "out", **args), train_dataset=tiny_dataset(32),
                      callbacks=callbacks)
    bind_callbacks(trainer)
    return trainer


def test_trainer_bf16_probe_and_fun_measure_under_autocast(tmp_path):
    """Trainer(bf16=True) on CPU: accelerate autocasts the model's forward; the probe's rows and the
    FUN scores are the bf16-autocast measurements (equal to trace_fisher under an explicit
    autocast on the same weights and batches), recorded as such in fisher.jsonl and run.json."""
    writer = RunWriter.create(tmp_path / "run", config={}, env={"mixed_precision": "bf16"})
    unfreeze = UnfreezeCallback("fisher:k=2;n_batches=2;estimator=exact;batch_size=4;first=fisher", "task", writer=writer)
    probe_cb = FisherProbeCallback(every=2, probe=unfreeze.probe, blocks="task", writer=writer)
    trainer = _trainer(tmp_path, [unfreeze, probe_cb], bf16=True, max_steps=3)
    assert trainer_precision(trainer, trainer.model)["precision"] == "bf16-autocast"
    reference = FisherProbe(n_batches=2, estimator="exact", batch_size=4, seed=unfreeze.probe.seed)
    reference.attach(tiny_dataset(32), default_data_collator)
    fresh = tiny_model(seed=0)
    blocks = BlockMap.from_model(fresh, adapter="task")
    with torch.autocast("cpu", torch.bfloat16):
        expected = reference.measure(fresh, blocks, 0)
    float32 = FisherProbe(n_batches=2, estimator="exact", batch_size=4, seed=unfreeze.probe.seed)
    float32 = float32.attach(tiny_dataset(32), default_data_collator).measure(fresh, blocks, 0)
    trainer.train()
    first = probe_cb.history[0]
    assert first.step == 0 and first.meta["precision"] == "bf16-autocast"
    for name in blocks.names:
        assert first.traces[name] == pytest.approx(expected.traces[name], rel=1e-6), name
        assert first.traces[name] == pytest.approx(float32.traces[name], rel=TOLERANCE[torch.bfloat16]), name
    event0 = unfreeze.schedule.events[0]
    assert event0.step == 0
    assert event0.scores == pytest.approx({n: expected.traces[n] for n in event0.scores}, rel=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "run" / "fisher.jsonl").read_text().splitlines()]
    assert rows and {r["precision"] for r in rows} == {"bf16-autocast"}
    env = json.loads((tmp_path / "run" / "run.json").read_text())["env"]
    assert env["precision"] == "bf16-autocast" and env["mixed_precision"] == "bf16" and env["grad_scaler"] is False


def test_trainer_fp16_on_cpu_is_recorded_as_float32(tmp_path):
    """accelerate trains fp16=True in float32 on CPU (no autocast, no GradScaler): recorded as it is.
    The fp16 + GradScaler path needs a GPU (benchmarks/gpu_check.py); its loss scale cannot reach
    the probe (test_loss_scale_never_reaches_the_measurement)."""
    writer = RunWriter.create(tmp_path / "run", config={})
    probe_cb = FisherProbeCallback(every=2, n_batches=1, estimator="exact", blocks="task", writer=writer)
    trainer = _trainer(tmp_path, [probe_cb], fp16=True, max_steps=1)
    trainer.train()
    env = json.loads((tmp_path / "run" / "run.json").read_text())["env"]
    assert (env["precision"], env["mixed_precision"], env["grad_scaler"]) == ("float32", "fp16", False)
    assert probe_cb.history[0].meta["precision"] == "float32"


def test_precision_recorder_and_full_precision_see_inside_the_forward(tmp_path):
    """accelerate's autocast wrapper is on model.forward (invisible outside); the recorder sees it
    from inside, and full_precision takes it off for its body and puts it back."""
    trainer = _trainer(tmp_path, [], bf16=True, max_steps=1)
    trainer.train()
    model = trainer.model
    batch = {k: v for k, v in _batches(1)[0].items() if k != "labels"}
    assert not torch.is_autocast_enabled("cpu") and autocast_forward(model)
    with PrecisionRecorder(model) as rec, torch.no_grad():
        model(**batch)
    assert rec.precision == "bf16-autocast" and rec.low_precision
    patched = model.forward
    with full_precision(model), PrecisionRecorder(model) as rec, torch.no_grad():
        model(**batch)
    assert rec.precision == "float32"
    assert model.forward == patched and autocast_forward(model)


def _term_value_and_grad(term, dtype, dropout: float):
    model = tiny_model(seed=0, dropout=dropout)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    batch = tiny_batch("classification", batch_size=8, seq_len=8, seed=1)
    torch.manual_seed(123)  # the same dropout masks in both precisions
    with torch.autocast("cpu", dtype) if dtype is not None else contextlib.nullcontext():
        value = term(model, batch, step=3)
    grads = torch.autograd.grad(value, params, allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params, strict=True)])
    return float(value.detach()), flat


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["finite_difference", "double_backprop", "dropout", "parameter_noise"])
def test_regularisers_under_autocast(case, dtype):
    """Value and gradient of each term under autocast agree with float32. The finite difference runs
    its own forwards in float32 under autocast (16-bit rounding does not cancel in
    [grad(theta + r g) - grad(theta)] / r: measured cosine 0.23 in bf16 before), so it is exact;
    the others within the roundoff budget of the module docstring."""
    term, dropout = {
        "finite_difference": (FisherPenalty(1.0, "finite_difference"), 0.1),
        "double_backprop": (FisherPenalty(1.0, "double_backprop"), 0.0),
        "dropout": (Consistency(Dropout()), 0.1),
        "parameter_noise": (Consistency(ParameterNoise(sigma=1e-2)), 0.1),
    }[case]
    v_full, g_full = _term_value_and_grad(term, None, dropout)
    v_low, g_low = _term_value_and_grad(term, dtype, dropout)
    assert math.isfinite(v_low) and torch.isfinite(g_low).all()
    if case == "finite_difference":
        assert v_low == v_full and torch.equal(g_low, g_full)
        return
    assert v_low == pytest.approx(v_full, rel=TOLERANCE[dtype])
    assert float((g_low - g_full).norm() / g_full.norm()) < 2 * TOLERANCE[dtype]


def test_finite_difference_task_at_perturbed_refused_under_autocast():
    from fisherlab.regularisers.base import RegulariserError

    model, _ = _model()
    with torch.autocast("cpu", torch.bfloat16), pytest.raises(RegulariserError, match="autocast"):
        FisherPenalty(1.0, task_at="perturbed").takes_task_forward(model)
    assert FisherPenalty(1.0, task_at="perturbed").takes_task_forward(model) is True


def test_environment_records_the_requested_mixed_precision():
    from types import SimpleNamespace

    from fisherlab.train import environment

    assert environment(None)["mixed_precision"] == "no"
    assert environment(None, SimpleNamespace(bf16=True, fp16=False))["mixed_precision"] == "bf16"
    assert environment(None, SimpleNamespace(bf16=False, fp16=True))["mixed_precision"] == "fp16"
