"""Output distributions: square-root factor, sampling, log-probabilities, inference of the kind."""

from __future__ import annotations

import pytest
import torch

from fisherlab.fisher.outputs import (
    Categorical,
    FisherError,
    OutputKind,
    get_output,
    infer_output,
)
from fisherlab.tiny import HEAD_KINDS, tiny_adapter_model, tiny_batch, tiny_config
from fisherlab.torch_utils import model_inputs


def _cov(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits.double(), -1)
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)


@pytest.mark.parametrize("n_classes", [2, 3, 9])
def test_sqrt_covariance_squares_to_diag_p_minus_ppT(n_classes):
    gen = torch.Generator().manual_seed(n_classes)
    logits = torch.randn(6, n_classes, generator=gen, dtype=torch.float64) * 3
    logits[1, 0] = float("-inf")                      # a masked class
    logits[2] = -60.0
    logits[2, -1] = 60.0                              # (numerically) deterministic row
    if n_classes > 2:
        logits[3, 1:] = float("-inf")                 # only one valid class: zero covariance
    factor = Categorical("label", logits, torch.arange(6))
    s = OutputKind().sqrt_covariance(factor)
    assert s.shape == (6, n_classes, n_classes - 1)
    assert s.dtype == logits.dtype
    torch.testing.assert_close(s @ s.transpose(-1, -2), _cov(logits), atol=1e-14, rtol=0)
    # masked classes carry no covariance
    assert s[1, 0].abs().max() == 0


def test_sqrt_covariance_keeps_float32_dtype():
    logits = torch.randn(4, 5)
    s = OutputKind().sqrt_covariance(Categorical("label", logits, torch.arange(4)))
    assert s.dtype == torch.float32
    torch.testing.assert_close((s @ s.transpose(-1, -2)).double(), _cov(logits), atol=1e-6, rtol=0)


def test_sampling_matches_probabilities_and_is_reproducible():
    logits = torch.tensor([[0.0, 1.0, 2.0, float("-inf")]]).repeat(20000, 1)
    outputs = {"logits": logits}
    kind = get_output("classification")
    a = kind.sample(outputs, None, torch.Generator().manual_seed(7))[0]
    b = kind.sample(outputs, None, torch.Generator().manual_seed(7))[0]
    assert torch.equal(a, b)
    freq = torch.bincount(a, minlength=4).double() / a.numel()
    p = torch.softmax(logits[0].double(), -1)
    assert freq[3] == 0                                   # never a masked class
    se = (p * (1 - p) / a.numel()).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-12).all(), (freq, p)
    # the caller's generator advanced by exactly one uniform per row; the global RNG did not move
    state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(7)
    kind.sample(outputs, None, gen)
    ref = torch.Generator().manual_seed(7)
    torch.rand(logits.shape[0], generator=ref, dtype=torch.float64)
    assert torch.equal(gen.get_state(), ref.get_state())
    assert torch.equal(state, torch.get_rng_state())


def test_same_seed_same_labels_in_float32_and_float64():
    m32 = tiny_adapter_model("bert", head="qa", dtype=torch.float32).eval()
    m64 = tiny_adapter_model("bert", head="qa", dtype=torch.float64).eval()
    batch = tiny_batch("qa", batch_size=6)
    kind = get_output("qa")
    with torch.no_grad():
        l32 = kind.sample(m32(**model_inputs(batch)), batch, torch.Generator().manual_seed(1))
        l64 = kind.sample(m64(**model_inputs(batch)), batch, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(l32, l64, strict=True))


@pytest.mark.parametrize("head", HEAD_KINDS)
def test_factors_log_prob_and_labels_per_head(head):
    model = tiny_adapter_model("bert", head=head, task_module="seq_bn", dtype=torch.float64).eval()
    batch = tiny_batch(head, batch_size=4, seq_len=7)
    with torch.no_grad():
        out = model(**model_inputs(batch))
    kind = infer_output(model, out, batch)
    assert kind.name == head
    factors = kind.factors(out, batch)
    mask = batch["attention_mask"].bool()
    if head == "qa":
        assert [f.name for f in factors] == ["start", "end"]
        for f in factors:  # padding positions are invalid classes
            assert torch.isneginf(f.logits[~mask]).all() and torch.isfinite(f.logits[mask]).all()
    elif head in ("tagging", "mlm"):
        rows = batch["labels"] != -100
        assert factors[0].logits.shape == (int(rows.sum()), out.logits.shape[-1])
        assert torch.equal(factors[0].example, rows.nonzero()[:, 0])
    else:
        assert factors[0].logits.shape == out.logits.shape
    # log_prob = sum over factors and rows of log softmax at the labels, by hand
    labels = kind.data_labels(out, batch)
    logp = kind.log_prob(out, batch, labels)
    assert logp.shape == (4,)
    expected = torch.zeros(4, dtype=torch.float64)
    for f, y in zip(factors, labels, strict=True):
        for row in range(f.logits.shape[0]):
            expected[f.example[row]] += torch.log_softmax(f.logits[row], -1)[y[row]]
    torch.testing.assert_close(logp, expected, atol=1e-12, rtol=0)
    # samples stay on valid classes; argmax is the mode
    sampled = kind.sample(out, batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(kind.log_prob(out, batch, sampled)).all()
    for f, y in zip(factors, kind.argmax(out, batch), strict=True):
        assert torch.equal(y, f.logits.argmax(-1))


def test_token_rows_fall_back_to_attention_mask_without_labels():
    model = tiny_adapter_model("bert", head="tagging").eval()
    batch = tiny_batch("tagging", batch_size=3)
    unlabeled = model_inputs(batch)
    with torch.no_grad():
        out = model(**unlabeled)
    kind = get_output("tagging")
    (factor,) = kind.factors(out, unlabeled)
    assert factor.logits.shape[0] == int(batch["attention_mask"].sum())
    with pytest.raises(FisherError, match="labels"):
        kind.data_labels(out, unlabeled)


def test_infer_output_for_plain_transformers_classes():
    from transformers import (
        BertForMaskedLM,
        BertForMultipleChoice,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    config = tiny_config("bert")
    expected = {BertForSequenceClassification: "classification", BertForMultipleChoice: "multiple_choice",
                BertForQuestionAnswering: "qa", BertForTokenClassification: "tagging", BertForMaskedLM: "mlm"}
    for cls, name in expected.items():
        assert infer_output(cls(config)).name == name
    regression = BertForSequenceClassification(tiny_config("bert"))
    regression.config.problem_type = "regression"
    with pytest.raises(FisherError, match="regression"):
        infer_output(regression)
    bare = BertModel(config).eval()
    batch = tiny_batch("classification")
    with torch.no_grad():
        out = bare(**model_inputs(batch))
    with pytest.raises(FisherError, match="no logits"):
        infer_output(bare, out, batch)
    with pytest.raises(FisherError, match="output="):
        infer_output(bare)


def test_infer_output_from_output_type_alone():
    from transformers.modeling_outputs import QuestionAnsweringModelOutput, TokenClassifierOutput

    assert infer_output(torch.nn.Linear(2, 2), TokenClassifierOutput(logits=torch.zeros(1, 2, 3))).name == "tagging"
    qa = QuestionAnsweringModelOutput(start_logits=torch.zeros(1, 3), end_logits=torch.zeros(1, 3))
    assert infer_output(torch.nn.Linear(2, 2), qa).name == "qa"


def test_bad_outputs_are_clear_errors():
    with pytest.raises(FisherError, match="unknown output 'regression'"):
        get_output("regression")
    assert get_output("question_answering").name == "qa"      # adapters' head_type spelling
    assert get_output("masked_lm").name == "mlm"
    kind = get_output("classification")
    with pytest.raises(FisherError, match="no 'logits'"):
        kind.factors({"hidden_states": torch.zeros(2, 3)})
    with pytest.raises(FisherError, match="NaN"):
        kind.factors({"logits": torch.tensor([[0.0, float("nan")]])})
    with pytest.raises(FisherError, match=r"must lie in \[0, 2\)"):
        kind.log_prob({"logits": torch.zeros(2, 2)}, None, [torch.tensor([0, 5])])
    with pytest.raises(FisherError, match="invalid class"):
        get_output("qa").log_prob(
            {"start_logits": torch.zeros(1, 3), "end_logits": torch.zeros(1, 3)},
            {"attention_mask": torch.tensor([[1, 1, 0]])}, [torch.tensor([2]), torch.tensor([0])])
    with pytest.raises(FisherError, match="start_positions"):
        get_output("qa").data_labels({"start_logits": torch.zeros(1, 3), "end_logits": torch.zeros(1, 3)}, {})
