"""MVR (multi-view subword regularisation, issue 11): the loss against a hand computation,
no stop-gradient, the spec/preset, and a fused training step on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_consistency import WORDS, _collate, _model, _wordpiece_tokenizer

from fisherlab.regularisers import (
    Dropout,
    RegulariserError,
    regularised_loss,
    regulariser_from_string,
)
from fisherlab.regularisers.mvr import MultiViewSubword
from fisherlab.spec.regularisers import MVRSpec, RegulariserSpecError, regulariser_spec
from fisherlab.torch_utils import trainable_parameters

pytestmark = [pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


def _hand(det: np.ndarray, sampled: np.ndarray, labels: np.ndarray, lam: float, temp: float) -> float:
    """float64 numpy: lambda * mean_b KL(softmax(det/T) || softmax(sampled/T)) + 1/2 (CE(sampled) - CE(det))."""
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lp, lq = log_softmax(det / temp), log_softmax(sampled / temp)
    kl = float((np.exp(lp) * (lp - lq)).sum(axis=1).mean())
    rows = np.arange(len(labels))
    ce_det = float(-log_softmax(det)[rows, labels].mean())
    ce_sampled = float(-log_softmax(sampled)[rows, labels].mean())
    return lam * kl + 0.5 * (ce_sampled - ce_det)


def test_mvr_loss_matches_a_hand_computation_and_trains_both_views():
    det = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    sampled = np.array([[1.0, 0.0, 0.0], [0.5, -0.5, 1.5], [-2.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, 2, 1, 2])
    a = torch.tensor(det, requires_grad=True)
    b = torch.tensor(sampled, requires_grad=True)
    batch = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.tensor(labels)}
    term = MultiViewSubword(Dropout(), weight=0.7, temperature=2.0, output="classification")
    value = term(torch.nn.Linear(1, 1), batch, {"logits": a}, view_outputs={"logits": b})
    assert float(value) == pytest.approx(_hand(det, sampled, labels, 0.7, 2.0), rel=1e-12)
    # the objective: task loss (CE on the deterministic view) + term = 1/2 CE + 1/2 CE + lambda KL
    ce = torch.nn.functional.cross_entropy(a, torch.tensor(labels))
    total = ce + value
    total.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0  # no stop-gradient: both views get gradients
    # today's consistency (symmetric KL, temperature 1, no CE on the sampled view) is a different number
    from fisherlab.regularisers import Consistency

    sym = Consistency(Dropout(), weight=0.7, output="classification")
    assert float(sym(torch.nn.Linear(1, 1), batch, {"logits": a.detach()}, view_outputs={"logits": b.detach()})) != pytest.approx(
        float(value))


def test_mvr_spec_is_a_named_preset_with_checked_keys():
    spec = regulariser_spec("mvr:weight=0.5;temperature=2;alpha=0.3")
    assert isinstance(spec, MVRSpec) and spec.label == "mvr"
    assert spec.to_string() == "mvr:weight=0.5;temperature=2.0;ce_share=0.5;alpha=0.3"
    assert spec.view_kwargs() == {"alpha": 0.3}
    with pytest.raises(RegulariserSpecError, match="temperature must be > 0"):
        regulariser_spec("mvr:temperature=0")
    with pytest.raises(RegulariserSpecError, match="unknown key 'view'"):
        regulariser_spec("mvr:view=dropout")
    with pytest.raises(RegulariserError, match="needs the tokenizer"):
        regulariser_from_string("mvr:weight=1")


def test_mvr_fused_step_on_a_tiny_model():
    tokenizer = _wordpiece_tokenizer()
    model = _model("classification", vocab=len(tokenizer), dtype=torch.float32)
    batch = _collate(tokenizer, WORDS)
    term = regulariser_from_string("mvr:weight=1.0;temperature=1.5;dropout=0.4;alpha=0.3;seed=1", tokenizer=tokenizer)
    total, parts, _ = regularised_loss(model, batch, [term], step=2)
    separate = term(model, batch, step=2)
    assert float(parts["mvr"]) == pytest.approx(float(separate), rel=1e-5, abs=1e-7)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in trainable_parameters(model).values())


def test_mvr_rejects_token_level_heads():
    tokenizer = _wordpiece_tokenizer()
    model = _model("tagging", vocab=len(tokenizer), dtype=torch.float32)
    batch = _collate(tokenizer, WORDS, tagging=True)
    term = regulariser_from_string("mvr:dropout=0.4", tokenizer=tokenizer)
    with pytest.raises(RegulariserError, match="output 'tagging' is not supported"):
        term(model, batch, step=0)
