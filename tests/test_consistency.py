"""Consistency terms: the parameter-noise KL against the probe's exact tr(F), exact zeros,
batch-size invariance, fused == separate forwards, and subword resegmentation."""

from __future__ import annotations

import pytest
import torch

from fisherlab.fisher.outputs import Categorical
from fisherlab.regularisers import (
    Consistency,
    Dropout,
    EmbeddingNoise,
    ParameterNoise,
    RegulariserError,
    Resegment,
    factor_divergence,
    regularised_loss,
    row_kl,
)
from fisherlab.tiny import tiny_adapter_model, tiny_batch, tiny_tokenizer
from fisherlab.torch_utils import RNGSnapshot, trainable_parameters

# Tests read values of tensors that carry a graph (for later backward): fine here.
pytestmark = [pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


WORDS = [["lower", "newest", "hello"], ["world", "lowest", "news", "héllo"], ["hello", "world"]]


def _model(head="classification", dtype=torch.float64, **kwargs):
    model = tiny_adapter_model(kwargs.pop("arch", "bert"), head=head, dtype=dtype, **kwargs)
    model.train()
    return model


# ---------------------------------------------------------------------------- divergences
def test_row_kl_matches_torch_and_handles_invalid_classes():
    gen = torch.Generator().manual_seed(0)
    p, q = torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(5, 4, generator=gen, dtype=torch.float64)
    expected = torch.nn.functional.kl_div(q.log_softmax(-1), p.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(row_kl(p, q), expected)
    p[:, 0] = q[:, 0] = float("-inf")  # e.g. padding positions of QA
    p.requires_grad_(True)
    value = row_kl(p, q).sum()
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(p.grad).all()


def test_divergence_reductions_stop_grad_and_duplication():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    example = torch.tensor([0, 0, 1, 1, 1, 2])  # token rows of three examples
    clean, view = [Categorical("token", a, example)], [Categorical("token", b, example)]
    rows = 0.5 * (row_kl(a, b) + row_kl(b, a))
    assert float(factor_divergence(clean, view, 3).detach()) == pytest.approx(float(rows.detach().sum() / 3))
    assert float(factor_divergence(clean, view, 3, reduction="rowmean").detach()) == pytest.approx(float(rows.detach().mean()))
    assert float(factor_divergence(clean, view, 3, divergence="kl").detach()) == pytest.approx(float(row_kl(a, b).detach().sum() / 3))
    twice = ([Categorical("token", torch.cat([a, a]), torch.cat([example, example + 3]))],
             [Categorical("token", torch.cat([b, b]), torch.cat([example, example + 3]))])
    for reduction in ("batchmean", "rowmean"):
        assert float(factor_divergence(*twice, 6, reduction=reduction).detach()) == pytest.approx(
            float(factor_divergence(clean, view, 3, reduction=reduction).detach()), rel=1e-12)
    grad_a, = torch.autograd.grad(factor_divergence(clean, view, 3, stop_grad=True), [a], allow_unused=True)
    assert grad_a is None


# ---------------------------------------------------------------------------- theory
def test_parameter_noise_kl_over_half_sigma_squared_matches_exact_trace():
    from fisherlab.blocks import BlockMap
    from fisherlab.fisher import trace_fisher

    model = _model("classification", num_labels=4)
    batch = tiny_batch("classification", batch_size=16, num_labels=4, seed=3)
    blocks = BlockMap.from_model(model, adapter="task")
    assert {n for b in blocks.names for n in blocks.parameters(model, b)} == set(trainable_parameters(model))
    exact = sum(trace_fisher(model, [batch], blocks, estimator="exact").traces.values())
    sigma, n = 1e-3, 800
    kl = Consistency(ParameterNoise(sigma, seed=5), divergence="kl")
    sym = Consistency(ParameterNoise(sigma, seed=5), divergence="sym_kl")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        rng = RNGSnapshot(model)
        outputs = model(**inputs)
        draws = torch.tensor([float(kl(model, batch, outputs, step=k, rng=rng)) for k in range(n)])
        sym_draws = torch.tensor([float(sym(model, batch, outputs, step=k, rng=rng)) for k in range(20)])
    estimate = float(draws.mean()) / (sigma**2 / 2)
    stderr = float(draws.std()) / n**0.5 / (sigma**2 / 2)
    assert stderr < 0.025 * exact  # so the check below can tell a few percent
    assert estimate == pytest.approx(exact, rel=0.06)
    # both directions agree to O(sigma^3)
    assert torch.allclose(sym_draws, draws[:20], rtol=1e-2)


# ---------------------------------------------------------------------------- exact zeros
def test_dropout_without_dropout_and_zero_embedding_noise_give_exactly_zero():
    model = _model("tagging", dtype=torch.float32)  # dropout 0
    batch = tiny_batch("tagging", batch_size=4)
    for view in (Dropout(), EmbeddingNoise(0.0), EmbeddingNoise(0.0, dist="normal")):
        term = Consistency(view)
        _, parts, _ = regularised_loss(model, batch, [term], step=0)  # fused 2B forward
        assert float(parts[term.name]) == 0.0
        assert float(term(model, batch, step=0)) == 0.0  # separate forwards
    with_dropout = _model("tagging", dtype=torch.float32, dropout=0.3)
    _, parts, _ = regularised_loss(with_dropout, batch, [Consistency(Dropout())], step=0)
    assert float(parts["consistency.dropout"]) > 0


def test_fused_forward_equals_separate_forward_and_keeps_the_task_loss():
    model = _model("multiple_choice")
    batch = tiny_batch("multiple_choice", batch_size=3)
    plain = float(model(**batch).loss)
    for view in (EmbeddingNoise(0.05, seed=2), EmbeddingNoise(0.05, dist="normal")):
        term = Consistency(view, weight=2.0)
        total, parts, _ = regularised_loss(model, batch, [term], step=9)
        separate = term(model, batch, step=9)
        assert float(parts[term.name]) == pytest.approx(float(separate), rel=1e-10)
        assert float(parts[term.name]) > 0
        assert float(parts["task_loss"]) == pytest.approx(plain, rel=1e-12)
        assert float(total) == pytest.approx(plain + float(separate), rel=1e-10)
    # the noise is re-drawn every step from the view's own seed
    assert float(Consistency(EmbeddingNoise(0.05))(model, batch, step=1)) != float(
        Consistency(EmbeddingNoise(0.05))(model, batch, step=2))


@pytest.mark.parametrize("head", ["classification", "tagging", "qa"])
@pytest.mark.parametrize("reduction", ["batchmean", "rowmean"])
def test_invariant_to_duplicating_the_batch(head, reduction):
    model = _model(head)
    batch = tiny_batch(head, batch_size=3)
    doubled = {k: torch.cat([v, v]) for k, v in batch.items()}
    term = Consistency(ParameterNoise(0.05, seed=1), reduction=reduction)
    single, double = float(term(model, batch, step=3)), float(term(model, doubled, step=3))
    assert single > 0
    assert double == pytest.approx(single, rel=1e-9)


# ---------------------------------------------------------------------------- resegment
def _wordpiece_tokenizer():
    return tiny_tokenizer("wordpiece", ["low", "##er", "##est", "new", "hello", "hel", "##lo", "world", "wor",
                                        "##ld", "lowe", "ne"])


def _unigram_tokenizer():
    return tiny_tokenizer("unigram", ["▁low", "er", "est", "▁new", "▁hello", "▁hel", "lo", "▁world", "ld", "▁wor"])


def _collate(tokenizer, words, tagging=False):
    enc = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")
    batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    if tagging:
        labels = torch.full(enc["input_ids"].shape, -100)
        for b in range(len(words)):
            previous = None
            for position, word in enumerate(enc.word_ids(b)):
                if word is not None and word != previous:
                    labels[b, position] = (b + word) % 3
                previous = word
        batch["labels"] = labels
    else:
        batch["labels"] = torch.tensor([b % 3 for b in range(len(words))])
    batch["words"] = words
    return batch


@pytest.mark.parametrize("make", [_wordpiece_tokenizer, _unigram_tokenizer])
def test_resegment_never_unk_and_varies_across_steps(make):
    tokenizer = make()
    view = Resegment(tokenizer, dropout=0.5, alpha=0.5, seed=4)
    unk = tokenizer.unk_token_id
    seen: dict[str, set] = {}
    for step in range(12):
        rng = __import__("numpy").random.default_rng(step)
        for words in WORDS:
            clean, sampled, _, first = view.resample(words, rng)
            encodable = [w for w in words if unk not in tokenizer(w, add_special_tokens=False)["input_ids"]]
            # the UNKs are exactly those of the deterministic encoding (unencodable words)
            assert sampled.count(unk) == clean.count(unk) == len(words) - len(encodable)
            text = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(sampled, True))
            assert text.replace(" ", "") == tokenizer.convert_tokens_to_string(
                tokenizer.convert_ids_to_tokens(clean, True)).replace(" ", "")
            assert len(first) == len(words)
            seen.setdefault(" ".join(words), set()).add(tuple(sampled))
    assert all(len(variants) > 1 for variants in seen.values())
    # same seed and step: same view
    batch = _collate(tokenizer, WORDS)
    first_rows = view.rows(None, batch, step=3).batch["input_ids"]
    assert torch.equal(first_rows, view.rows(None, batch, step=3).batch["input_ids"])
    assert not torch.equal(first_rows, view.rows(None, batch, step=4).batch["input_ids"])


def test_wordpiece_without_dropout_is_the_deterministic_tokenisation():
    tokenizer = _wordpiece_tokenizer()
    view = Resegment(tokenizer, dropout=0.0)
    batch = _collate(tokenizer, WORDS)
    rows = view.rows(None, batch, step=0).batch
    assert torch.equal(rows["input_ids"], batch["input_ids"])
    assert torch.equal(rows["token_type_ids"], batch["token_type_ids"])


@pytest.mark.parametrize("arch,make", [("bert", _wordpiece_tokenizer), ("xlm-roberta", _unigram_tokenizer)])
@pytest.mark.parametrize("head", ["classification", "tagging"])
def test_resegment_term_aligns_words_and_trains(arch, make, head):
    tokenizer = make()
    model = _model(head, arch=arch, vocab=len(tokenizer), dtype=torch.float32)
    batch = _collate(tokenizer, WORDS, tagging=head == "tagging")
    term = Consistency(Resegment(tokenizer, dropout=0.4, alpha=0.3, seed=1))
    rows = term.rows(model, batch, step=2)
    if head == "tagging":  # aligned positions are the first sub-token of each word in both views
        for b, (clean_pos, view_pos) in enumerate(rows.alignment):
            assert [int(batch["labels"][b, p]) != -100 for p in clean_pos] == [True] * len(clean_pos)
            assert len(view_pos) == len(WORDS[b])
    total, parts, _ = regularised_loss(model, batch, [term], step=2)
    separate = term(model, batch, step=2)
    assert float(parts[term.name]) == pytest.approx(float(separate), rel=1e-5, abs=1e-9)
    assert float(parts[term.name]) > 0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in trainable_parameters(model).values())
    # a dropout-free WordPiece view of the same words is the same input: exactly zero
    if arch == "bert":
        zero = Consistency(Resegment(tokenizer, dropout=0.0))
        assert float(regularised_loss(model, batch, [zero], step=2)[1][zero.name]) == 0.0


def test_resegment_errors_are_clear():
    tokenizer = _wordpiece_tokenizer()
    model = _model("classification", vocab=len(tokenizer), dtype=torch.float32)
    batch = _collate(tokenizer, WORDS)
    term = Consistency(Resegment(tokenizer))
    with pytest.raises(RegulariserError, match="batch\\['words'\\]"):
        term(model, {k: v for k, v in batch.items() if k != "words"})
    wrong = dict(batch, words=[WORDS[1], WORDS[0], WORDS[2]])
    with pytest.raises(RegulariserError, match="does not tokenise"):
        term(model, wrong)
    with pytest.raises(RegulariserError, match="tokenizer"):
        Resegment(None)


@pytest.mark.parametrize("head", ["classification", "multiple_choice", "qa", "tagging", "mlm"])
def test_fused_view_rows_leave_the_task_loss_unchanged(head):
    model = _model(head, dtype=torch.float32)
    batch = tiny_batch(head, batch_size=3)
    plain = float(model(**batch).loss)
    term = Consistency(EmbeddingNoise(0.1))
    total, parts, outputs = regularised_loss(model, batch, [term], step=0)
    assert float(parts["task_loss"]) == pytest.approx(plain, rel=1e-5)
    assert float(parts[term.name]) > 0
    key = "start_logits" if head == "qa" else "logits"
    assert outputs[key].shape[0] == 3
