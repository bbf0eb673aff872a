"""Every tr(F) estimator against the float64 brute-force oracle (tests/fisher_oracle.py).

Models are converted to float64 and the estimators run in float64 too, so the numbers
must agree to 1e-6 relative. Sampled-label estimators are compared on the very labels
the seeded generator draws (exact agreement); their statistics are in
test_estimators_statistics.py.
"""

from __future__ import annotations

import math

import fisher_oracle as oracle
import pytest
import torch

from fisherlab.blocks import BlockMap
from fisherlab.fisher import ESTIMATORS, FisherMeasurement, trace_fisher
from fisherlab.fisher.outputs import infer_output
from fisherlab.tiny import tiny_adapter_model, tiny_batch

RTOL = 1e-6
SETUPS = [  # (arch, task module, attention backend)
    ("bert", "seq_bn", "sdpa"),
    ("bert", "lora", "eager"),
    ("xlm-roberta", "seq_bn", "eager"),
    ("xlm-roberta", "lora", "sdpa"),
    ("deberta-v2", "seq_bn", "eager"),
    ("deberta-v2", "lora", "eager"),
]


def _model(arch, task_module, attn, head="classification", dtype=torch.float64, **kw):
    model = tiny_adapter_model(arch, task_module=task_module, head=head, attn_implementation=attn,
                               dtype=dtype, **kw)
    return model.eval()


def _batches(head, sizes=(3, 2), seq_len=6, **kw):
    vocab = kw.pop("vocab", 64)
    return [tiny_batch(head, batch_size=b, seq_len=seq_len, seed=10 + i, vocab=vocab, **kw)
            for i, b in enumerate(sizes)]


def oracle_traces(model, batches, blocks, estimator, seed=0, names=None):
    """The oracle's answer for ``estimator`` (labels drawn exactly as the estimator draws them)."""
    kind = infer_output(model)
    gen = torch.Generator().manual_seed(seed)
    how = {"per_example": "sample", "batch": "sample", "empirical": "data", "reference": "argmax"}.get(estimator)
    rows, batch_values, sizes = [], [], []
    for batch in batches:
        labels = oracle.labels_for(model, batch, kind, how, gen) if how else None
        size = next(iter(batch.values())).shape[0]
        sizes.append(size)
        if estimator == "exact":
            rows += oracle.exact_per_example(model, batch, kind, blocks, names)
        elif estimator in ("per_example", "empirical"):
            rows += oracle.per_example_sq_norms(model, batch, kind, blocks, labels, names)
        else:
            sq = oracle.batch_sq_norm(model, batch, kind, blocks, labels, names, mean=estimator == "reference")
            batch_values.append(sq)
    if rows:
        return oracle.mean_over_examples(rows), rows
    if estimator == "batch":  # sum of squared batch-sum norms over the number of examples
        return {n: sum(v[n] for v in batch_values) / sum(sizes) for n in batch_values[0]}, batch_values
    return {n: sum(v[n] / s for v, s in zip(batch_values, sizes, strict=True)) / len(sizes) for n in batch_values[0]}, batch_values


def assert_traces_close(measured: FisherMeasurement, expected: dict[str, float], rtol=RTOL):
    assert list(measured.traces) == list(expected)
    for name, value in expected.items():
        got = measured.traces[name]
        assert abs(got - value) <= rtol * abs(value) + 1e-300, (name, got, value)
    assert any(v > 0 for v in expected.values())


@pytest.mark.parametrize("arch,task_module,attn", SETUPS)
def test_every_estimator_matches_oracle_classification(arch, task_module, attn):
    model = _model(arch, task_module, attn)
    blocks = BlockMap.from_model(model, adapter="task")
    batches = _batches("classification")
    assert (batches[1]["attention_mask"] == 0).any()           # padding is exercised
    for estimator in ESTIMATORS:
        measured = trace_fisher(model, batches, blocks, estimator=estimator, seed=3)
        expected, _ = oracle_traces(model, batches, blocks, estimator, seed=3)
        assert_traces_close(measured, expected)
        assert measured.n_examples == 5
        assert measured.meta["estimator"] == estimator
        assert measured.meta["attn_implementation"] == attn
        assert measured.meta["dtype"] == "float64" and measured.meta["mode"] == "eval"
        assert set(measured.traces) == {f"layer.{i}" for i in range(blocks.n_layers)} | {"head"}


HEAD_CASES = [  # every head on bert + deberta; sequence-level heads on xlm-roberta too
    (head, *setup)
    for head in ("multiple_choice", "qa", "tagging", "mlm")
    for setup in [("bert", "seq_bn", "sdpa"), ("deberta-v2", "lora", "eager")]
    + ([("xlm-roberta", "lora", "eager")] if head in ("multiple_choice", "qa") else [])
]


@pytest.mark.parametrize("head,arch,task_module,attn", HEAD_CASES)
def test_other_heads_match_oracle(head, arch, task_module, attn):
    vocab = 16 if head == "mlm" else 64                            # the oracle loops over every class
    model = _model(arch, task_module, attn, head=head, vocab=vocab)
    blocks = BlockMap.from_model(model, adapter="task")
    batches = _batches(head, sizes=(3,), seq_len=5, vocab=vocab)
    estimators = ["exact", "empirical", "reference", "per_example"] + (["batch"] if head == "qa" else [])
    for estimator in estimators:
        measured = trace_fisher(model, batches, blocks, estimator=estimator, seed=1)
        expected, _ = oracle_traces(model, batches, blocks, estimator, seed=1)
        assert_traces_close(measured, expected)
        assert measured.meta["output"] == head


def test_full_finetuning_blocks_and_plain_transformers_model():
    from transformers import BertForSequenceClassification

    from fisherlab.tiny import tiny_config

    model = _model("bert", None, "eager")
    blocks = BlockMap.from_model(model)                            # whole layers
    batches = _batches("classification", sizes=(3,))
    for estimator in ("exact", "empirical"):
        assert_traces_close(trace_fisher(model, batches, blocks, estimator=estimator),
                            oracle_traces(model, batches, blocks, estimator)[0])
    torch.manual_seed(0)
    plain = BertForSequenceClassification(tiny_config("bert", attn_implementation="sdpa")).double().eval()
    plain_blocks = BlockMap.from_model(plain)
    measured = trace_fisher(plain, batches, estimator="exact")     # blocks discovered, output inferred
    assert measured.meta["output"] == "classification"
    assert_traces_close(measured, oracle_traces(plain, batches, plain_blocks, "exact")[0])


def test_float32_estimates_agree_with_float64_oracle():
    model64 = _model("bert", "lora", "sdpa")
    model32 = _model("bert", "lora", "sdpa", dtype=torch.float32)
    blocks = BlockMap.from_model(model64, adapter="task")
    batches = _batches("classification")
    for estimator in ("exact", "per_example"):
        measured = trace_fisher(model32, batches, blocks, estimator=estimator)
        assert measured.meta["dtype"] == "float32"
        assert_traces_close(measured, oracle_traces(model64, batches, blocks, estimator)[0], rtol=1e-3)


def test_stderr_n_examples_and_records():
    model = _model("bert", "seq_bn", "eager")
    blocks = BlockMap.from_model(model, adapter="task")
    blocks.set_trainable(model, ["layer.0"], False)               # a frozen block is measured too
    batches = _batches("classification")
    measured = trace_fisher(model, batches, blocks, estimator="empirical")
    _, rows = oracle_traces(model, batches, blocks, "empirical")
    for name in blocks.names:
        values = torch.tensor([r[name] for r in rows], dtype=torch.float64)
        se = float(values.std(unbiased=True)) / math.sqrt(len(rows))
        assert measured.stderr[name] == pytest.approx(se, rel=1e-6)
    records = measured.to_records()
    assert [r["block"] for r in records] == blocks.names
    assert records[0] == {"block": "layer.0", "layer": 0, "trace": measured.traces["layer.0"],
                          "stderr": measured.stderr["layer.0"], "n_examples": 5, "trainable": False}
    assert records[0]["trace"] > 0
    assert records[-1]["layer"] is None and records[-1]["trainable"] is True
    overridden = measured.to_records(trainable={"layer.0": True})
    assert overridden[0]["trainable"] is True and overridden[1]["trainable"] is False
    # batch-level estimators: stderr over batches, NaN with one batch
    one = trace_fisher(model, batches[:1], blocks, estimator="reference")
    assert all(math.isnan(v) for v in one.stderr.values())
    two = trace_fisher(model, batches, blocks, estimator="batch")
    assert all(math.isfinite(v) and v >= 0 for v in two.stderr.values())


def test_block_subset_and_determinism():
    model = _model("xlm-roberta", "seq_bn", "sdpa", dtype=torch.float32)
    blocks = BlockMap.from_model(model, adapter="task")
    batches = _batches("classification")
    a = trace_fisher(model, batches, blocks, block_names=["head", "layer.1"], seed=5)
    b = trace_fisher(model, batches, blocks, block_names=["head", "layer.1"], seed=5)
    c = trace_fisher(model, batches, blocks, seed=6)
    assert list(a.traces) == ["head", "layer.1"]
    assert a.traces == b.traces                                    # same seed, identical numbers
    assert a.traces["head"] != c.traces["head"]                    # another seed, other labels
    assert a.meta["labels"] == "sampled" and a.meta["seed"] == 5


def test_blocks_discovered_from_the_active_setup():
    """blocks=None: the task module of Stack(lang, task) is the adapter named like the active head."""
    model = tiny_adapter_model("bert", head="classification", lang_adapters=["en"]).eval()
    batches = _batches("classification", sizes=(2,))
    discovered = trace_fisher(model, batches, estimator="exact")
    explicit = trace_fisher(model, batches, BlockMap.from_model(model, adapter="task"), estimator="exact")
    assert discovered.meta["task_module"] == "task"
    assert discovered.traces == explicit.traces


def test_blocks_that_do_not_influence_the_outputs_are_flagged():
    model = tiny_adapter_model("bert", head="classification", lang_adapters=["en", "de"]).eval()
    assert "de" not in str(model.active_adapters)
    with pytest.warns(UserWarning, match="exactly 0"):
        measured = trace_fisher(model, _batches("classification", sizes=(2,)), adapter="de")
    assert measured.meta["zero_blocks"] == [n for n in measured.traces if n != "head"]
