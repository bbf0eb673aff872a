"""Statistical properties of the estimators and the KL identity that defines tr(F).

* ``per_example`` and ``batch`` are unbiased: over many seeds their mean is within a
  few standard errors of ``exact``; ``per_example`` has far lower variance.
* ``reference`` (argmax labels, mean-loss gradient) underestimates ``exact``.
* Independent identity: for parameter noise ``eps ~ N(0, s^2 I)`` on one block,
  ``E KL[p_theta || p_theta+eps] = (s^2 / 2) tr(F_block) + O(s^4)``. Checked exactly
  via the Hessian of the KL at ``eps = 0`` (which *is* the Fisher), and by Monte Carlo
  over seeded noise.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from fisherlab.blocks import BlockMap
from fisherlab.fisher import trace_fisher
from fisherlab.tiny import tiny_adapter_model, tiny_batch
from fisherlab.torch_utils import model_inputs


@pytest.fixture(scope="module")
def setup():
    model = tiny_adapter_model("bert", task_module="seq_bn", head="classification", num_labels=3,
                               attn_implementation="sdpa", dtype=torch.float64).eval()
    blocks = BlockMap.from_model(model, adapter="task")
    batch = tiny_batch("classification", batch_size=8, seq_len=6, seed=3)
    exact = trace_fisher(model, [batch], blocks, estimator="exact")
    return model, blocks, batch, exact


def test_sampled_estimators_are_unbiased_and_per_example_has_lower_variance(setup):
    model, blocks, batch, exact = setup
    n_seeds = 30
    runs = {est: torch.tensor([list(trace_fisher(model, [batch], blocks, estimator=est, seed=s).traces.values())
                               for s in range(n_seeds)], dtype=torch.float64)
            for est in ("per_example", "batch")}
    target = torch.tensor(list(exact.traces.values()), dtype=torch.float64)
    for est, values in runs.items():
        se = values.std(0) / n_seeds ** 0.5
        z = (values.mean(0) - target) / se
        assert (z.abs() < 4).all(), (est, z)
    ratio = runs["batch"].var(0) / runs["per_example"].var(0)
    assert (ratio > 20).all(), ratio


def test_reference_labels_underestimate_exact(setup):
    model, blocks, batch, exact = setup
    reference = trace_fisher(model, [batch], blocks, estimator="reference")
    for name, value in exact.traces.items():
        assert reference.traces[name] < value


def _mean_kl(model, batch, names, eps, base_logp):
    """Mean over examples of KL(p_theta || p_theta+eps) with eps a flat vector over ``names``."""
    params, offset = {}, 0
    named = dict(model.named_parameters())
    for name in names:
        p = named[name]
        params[name] = p.detach() + eps[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    logits = functional_call(model, params, args=(), kwargs=model_inputs(batch)).logits
    logq = torch.log_softmax(logits, -1)
    return (base_logp.exp() * (base_logp - logq)).sum(-1).mean()


@pytest.mark.parametrize("block", ["layer.1", "head"])
def test_kl_second_order_expansion_equals_fisher_trace(setup, block):
    """tr(Hessian of E KL at eps=0) = tr(F): exact, float64, no sampling."""
    model, blocks, batch, exact = setup
    names = list(blocks[block].param_names)
    size = sum(dict(model.named_parameters())[n].numel() for n in names)
    with torch.no_grad():
        base = torch.log_softmax(model(**model_inputs(batch)).logits, -1)
    eps = torch.zeros(size, dtype=torch.float64, requires_grad=True)
    grad = torch.autograd.grad(_mean_kl(model, batch, names, eps, base), eps, create_graph=True)[0]
    hessian_trace = sum(float(torch.autograd.grad(grad[i], eps, retain_graph=True)[0][i]) for i in range(size))
    assert hessian_trace == pytest.approx(exact.traces[block], rel=1e-8)


def test_kl_under_parameter_noise_monte_carlo():
    """E KL[p || p_{theta+eps}] ~= (s^2/2) tr(F) for small s, seeded Gaussian noise on the head block.

    The head's input is captured once and the head alone re-evaluated per noise draw
    (antithetic pairs +-eps cancel the odd orders), so many draws are cheap."""
    model = tiny_adapter_model("bert", task_module="seq_bn", head="classification", num_labels=3,
                               attn_implementation="sdpa", dtype=torch.float64).eval()
    blocks = BlockMap.from_model(model, adapter="task")
    batch = tiny_batch("classification", batch_size=32, seq_len=6, seed=4)
    exact = trace_fisher(model, [batch], blocks, estimator="exact")
    prefix = blocks["head"].param_names[0].rsplit(".", 2)[0]
    while not all(n.startswith(prefix + ".") for n in blocks["head"].param_names):
        prefix = prefix.rsplit(".", 1)[0]
    head = model.get_submodule(prefix)
    captured = {}
    handle = head.register_forward_pre_hook(lambda mod, a, k: captured.update(args=a, kwargs=k), with_kwargs=True)
    with torch.no_grad():
        base = torch.log_softmax(model(**model_inputs(batch)).logits, -1)
    handle.remove()
    params = {n: p.detach() for n, p in head.named_parameters()}
    assert len(params) == len(blocks["head"].param_names)

    def mean_kl(noise):
        out = functional_call(head, {n: params[n] + noise[n] for n in params}, captured["args"], captured["kwargs"])
        logq = torch.log_softmax(out.logits if hasattr(out, "logits") else out[0], -1)
        return float((base.exp() * (base - logq)).sum(-1).mean())

    assert mean_kl({n: torch.zeros_like(p) for n, p in params.items()}) == pytest.approx(0, abs=1e-15)
    # Orthogonal Gaussian Monte Carlo: eps_j = s * r_j * q_j with q_j the columns of a Haar
    # orthogonal matrix and r_j ~ chi_P, so each eps_j is exactly N(0, s^2 I); the coupling
    # only makes the draws negatively correlated (far lower variance than independent draws).
    scale = 1e-3
    gen = torch.Generator().manual_seed(0)
    shapes = {n: p.shape for n, p in params.items()}
    size = sum(p.numel() for p in params.values())
    q, r = torch.linalg.qr(torch.randn(size, size, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    radii = torch.randn(size, size, generator=gen, dtype=torch.float64).norm(dim=0)

    def unflatten(vector):
        out, offset = {}, 0
        for n, shape in shapes.items():
            k = int(torch.Size(shape).numel())
            out[n] = vector[offset:offset + k].view(shape)
            offset += k
        return out

    samples = []
    with torch.no_grad():
        for j in range(size):
            eps = scale * radii[j] * q[:, j]
            samples.append(0.5 * (mean_kl(unflatten(eps)) + mean_kl(unflatten(-eps))))
    samples = torch.tensor(samples, dtype=torch.float64)
    predicted = 0.5 * scale ** 2 * exact.traces["head"]
    mean = float(samples.mean())
    assert abs(mean - predicted) / predicted < 0.01
