"""The per-example engine's registry: a LayerNorm-like type registered with
register_norm_sampler is measured by the LayerNorm kernel, exactly as the loop measures it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from fisherlab.fisher.persample import (
    FallbackWarning,
    PerExampleGradNorms,
    layer_norm_sampler,
    register_norm_sampler,
    registry,
    sampler_for,
)


class MyNorm(nn.LayerNorm):
    """Overrides forward, so the MRO lookup does not treat it as a LayerNorm."""

    def forward(self, x):
        return super().forward(x)


def _norms(model, x, method):
    blocks = {"norm": ["1.weight", "1.bias"], "linear": ["0.weight", "0.bias", "2.weight"]}
    with PerExampleGradNorms(model, blocks, method=method) as engine:
        out = model(x)
        return engine.sq_norms(out.pow(2).sum(), batch_size=x.shape[0])


def test_register_norm_sampler_matches_the_loop(monkeypatch):
    monkeypatch.setattr(registry, "_SAMPLERS", dict(registry._SAMPLERS))
    monkeypatch.setattr(registry, "_WARNED", set())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), MyNorm(5), nn.Linear(5, 3, bias=False)).double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    want = _norms(model, x, "loop")
    assert sampler_for(model[1]) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = _norms(model, x, "auto")
    assert any(issubclass(w.category, FallbackWarning) and "MyNorm" in str(w.message) for w in caught)
    register_norm_sampler(MyNorm)
    assert sampler_for(model[1]).fn is layer_norm_sampler
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = _norms(model, x, "auto")
    for block in want:
        assert torch.allclose(before[block], want[block], rtol=1e-10)
        assert torch.allclose(got[block], want[block], rtol=1e-10)
        assert bool((want[block] > 0).all())


def test_sampler_lookup_and_bad_method():
    assert sampler_for(nn.Linear(2, 2)) is not None
    assert sampler_for(nn.ReLU()) is None
    with pytest.raises(ValueError, match="unknown method"):
        PerExampleGradNorms(nn.Linear(2, 2), {"b": ["weight"]}, method="fast")
