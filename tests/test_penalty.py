"""Fisher penalty and L2: values against the probe's batch estimator, gradients against float64
finite differences of the value, finite differences against double backprop."""

from __future__ import annotations

import pytest
import torch

from fisherlab.blocks import BlockMap
from fisherlab.regularisers import L2, FisherPenalty, RegulariserError, regularised_loss
from fisherlab.tiny import tiny_adapter_model, tiny_batch
from fisherlab.torch_utils import step_seed, trainable_parameters

# Tests read values of tensors that carry a graph (for later backward): fine here.
pytestmark = [pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


def _model(head: str = "classification", dtype=torch.float64, **kwargs):
    model = tiny_adapter_model("bert", head=head, dtype=dtype, **kwargs)
    model.train()
    return model


def _flat_grad(value: torch.Tensor, model) -> torch.Tensor:
    params = list(trainable_parameters(model).values())
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads, strict=True)])


def _value(term, model, batch, step=0) -> float:
    return float(term(model, batch, step=step).detach())


@pytest.mark.parametrize("head", ["classification", "tagging", "qa"])
def test_value_equals_batch_estimator_on_the_same_sampled_labels(head):
    model = _model(head)
    batch = tiny_batch(head, batch_size=5)
    blocks = BlockMap.from_model(model, adapter="task")
    covered = {n for b in blocks.names for n in blocks.parameters(model, b)}
    assert covered == set(trainable_parameters(model)), "the comparison needs the same parameter set"
    from fisherlab.fisher import trace_fisher

    for method in ("finite_difference", "double_backprop"):
        penalty = FisherPenalty(alpha=1.0, method=method, seed=3)
        measured = trace_fisher(model, [batch], blocks, estimator="batch", seed=step_seed(3, 7))
        expected = sum(measured.traces.values())
        assert _value(penalty, model, batch, step=7) == pytest.approx(expected, rel=1e-10)
        unscaled = FisherPenalty(alpha=2.0, method=method, seed=3, scaled=False)
        assert _value(unscaled, model, batch, step=7) == pytest.approx(2.0 * expected / 5, rel=1e-10)
    # a different step draws different labels
    assert _value(FisherPenalty(1.0, seed=3), model, batch, step=8) != pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("method", ["finite_difference", "double_backprop"])
def test_gradient_matches_float64_finite_difference_of_the_penalty(method):
    model = _model("classification")
    batch = tiny_batch("classification", batch_size=4)
    penalty = FisherPenalty(alpha=0.5, method=method, h=1e-6)
    grad = _flat_grad(penalty(model, batch, step=2), model)
    params = list(trainable_parameters(model).values())
    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(params, direction, strict=True):
                    p.add_(sign * eps * d)
            values.append(_value(penalty, model, batch, step=2))
            with torch.no_grad():
                for p, d in zip(params, direction, strict=True):
                    p.sub_(sign * eps * d)
        numeric = (values[0] - values[1]) / (2 * eps)
        analytic = float(grad @ torch.cat([d.flatten() for d in direction]))
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_finite_difference_converges_to_double_backprop_as_h_shrinks():
    model = _model("tagging")
    batch = tiny_batch("tagging", batch_size=4)
    exact = _flat_grad(FisherPenalty(1.0, "double_backprop")(model, batch, step=1), model)
    errors = []
    for h in (1e-2, 1e-3, 1e-4):
        approx = _flat_grad(FisherPenalty(1.0, "finite_difference", h=h)(model, batch, step=1), model)
        errors.append(float((approx - exact).norm() / exact.norm()))
    assert errors[0] > 5 * errors[1] > 25 * errors[2]
    assert errors[2] < 1e-3


def test_finite_difference_replays_dropout_and_restores_parameters_exactly():
    model = _model("classification", dtype=torch.float32, dropout=0.2)
    batch = tiny_batch("classification", batch_size=6)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    with torch.random.fork_rng():
        torch.manual_seed(11)
        exact = _flat_grad(FisherPenalty(1.0, "double_backprop")(model, batch, step=0), model)
        torch.manual_seed(11)
        term = FisherPenalty(1.0, "finite_difference", h=1e-3)(model, batch, step=0)
        state_after = torch.get_rng_state()
        approx = _flat_grad(term, model)
        torch.manual_seed(11)
        model(**{k: v for k, v in batch.items() if k != "labels"})
        state_plain = torch.get_rng_state()
    # one forward's worth of global RNG consumed: the perturbed forward replayed the masks
    assert torch.equal(state_after, state_plain)
    assert float((approx - exact).norm() / exact.norm()) < 5e-3
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_shared_forward_gives_the_same_term_as_an_own_forward():
    model = _model("qa")
    batch = tiny_batch("qa", batch_size=4)
    for method in ("finite_difference", "double_backprop"):
        penalty = FisherPenalty(1.0, method)
        own = penalty(model, batch, step=4)
        _, parts, _ = regularised_loss(model, batch, [penalty], step=4)
        shared = parts["fisher_penalty"]
        assert float(shared.detach()) == pytest.approx(float(own.detach()), rel=1e-12)
        assert torch.allclose(_flat_grad(shared, model), _flat_grad(own, model), rtol=1e-6, atol=1e-10)


def test_sub_batch_uses_the_first_examples():
    model = _model("classification")
    batch = tiny_batch("classification", batch_size=6)
    head = {k: v[:2] for k, v in batch.items()}
    assert _value(FisherPenalty(1.0, sub_batch=2), model, batch, step=1) == pytest.approx(
        _value(FisherPenalty(1.0), model, head, step=1), rel=1e-12)
    assert _value(FisherPenalty(1.0, sub_batch=0.5), model, batch, step=1) == pytest.approx(
        _value(FisherPenalty(1.0), model, {k: v[:3] for k, v in batch.items()}, step=1), rel=1e-12)


def test_double_backprop_refuses_fused_attention_and_finite_difference_accepts_it():
    model = _model("classification", dtype=torch.float32, attn_implementation="sdpa")
    batch = tiny_batch("classification")
    with pytest.raises(RegulariserError, match="eager.*finite_difference"):
        FisherPenalty(1.0, "double_backprop")(model, batch)
    grad = _flat_grad(FisherPenalty(1.0, "finite_difference")(model, batch), model)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_reentrant_checkpointing_is_refused_and_non_reentrant_works():
    from transformers import BertForSequenceClassification

    from fisherlab.tiny import tiny_config

    torch.manual_seed(0)
    plain = BertForSequenceClassification(tiny_config("bert")).train()
    batch = tiny_batch("classification")
    plain.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(RegulariserError, match="use_reentrant"):
        FisherPenalty(1.0)(plain, batch)
    model = _model("classification")
    reference = _flat_grad(FisherPenalty(1.0)(model, batch, step=1), model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = _flat_grad(FisherPenalty(1.0)(model, batch, step=1), model)
    assert torch.allclose(checkpointed, reference, rtol=1e-10, atol=1e-12)


def test_bad_arguments_fail_clearly():
    with pytest.raises(RegulariserError, match="method"):
        FisherPenalty(method="hessian")
    with pytest.raises(RegulariserError, match="sub_batch"):
        FisherPenalty(sub_batch=1.5)
    with pytest.raises(RegulariserError, match="to="):
        L2(to="origin")


def test_l2_to_zero_and_to_init():
    model = _model("classification")
    params = trainable_parameters(model)
    expected = 0.5 * 0.1 * sum(float(p.detach().pow(2).sum()) for p in params.values())
    assert float(L2(0.1, "zero")(model)) == pytest.approx(expected, rel=1e-12)
    term = L2(0.1, "init")
    assert float(term(model).detach()) == 0.0  # anchored at the first call
    name, first = next(iter(params.items()))
    with torch.no_grad():
        first.add_(1.0)
    value = term(model)
    assert float(value.detach()) == pytest.approx(0.05 * first.numel(), rel=1e-12)
    grad = torch.autograd.grad(value, [first])[0]
    assert torch.allclose(grad, torch.full_like(first, 0.1))


@pytest.mark.parametrize("task_at", ["theta", "perturbed"])
def test_total_gradient_of_the_shared_finite_difference_converges(task_at):
    """Task loss + penalty through ``regularised_loss``: both finite-difference schedules
    approach the exact (double backprop) total gradient as h shrinks, with dropout on."""
    model = _model("classification", dropout=0.2)
    batch = tiny_batch("classification", batch_size=6)

    def total_grad(term):
        with torch.random.fork_rng():
            torch.manual_seed(5)
            total, parts, _ = regularised_loss(model, batch, [term], step=2)
        return float(parts["task_loss"].detach()), _flat_grad(total, model)

    task, exact = total_grad(FisherPenalty(1.0, "double_backprop"))
    errors = []
    for h in (1e-2, 1e-3, 1e-4):
        task_fd, approx = total_grad(FisherPenalty(1.0, h=h, task_at=task_at))
        assert task_fd == pytest.approx(task, rel=1e-12)  # the logged task loss is at theta
        errors.append(float((approx - exact).norm() / exact.norm()))
    assert errors[0] > 5 * errors[1] > 25 * errors[2]
    assert errors[2] < 2e-4


def test_perturbed_task_loss_refuses_checkpointing_and_auto_falls_back():
    model = _model("classification")
    batch = tiny_batch("classification")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with pytest.raises(RegulariserError, match="checkpointing"):
        regularised_loss(model, batch, [FisherPenalty(1.0, task_at="perturbed")])
    auto = FisherPenalty(1.0)
    assert not auto.takes_task_forward(model)
    total, _, _ = regularised_loss(model, batch, [auto])
    assert torch.isfinite(_flat_grad(total, model)).all()
    with pytest.raises(RegulariserError, match="finite_difference"):
        FisherPenalty(method="double_backprop", task_at="perturbed")
