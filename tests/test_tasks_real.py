"""XCOPA and XQuAD loaders on the real files in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json

import pytest
import torch
from task_helpers import word_tokenizer as _word_tokenizer

from fisherlab.tasks import get_task


def test_xcopa_loads_multiple_choice_pairs(shared_data):
    task = get_task("xcopa", data_dir=shared_data)
    assert task.head == "multiple_choice" and task.num_labels == 2
    assert {"it", "zh", "qu"} <= set(task.languages) and task.source_language == "en"
    rows = task.examples("test", "it")
    assert len(rows) == 500 and len(task.examples("validation", "it")) == 100
    tokenizer = _word_tokenizer(r[k] for r in rows for k in ("premise", "choice1", "choice2"))
    data = task.load("test", "it", tokenizer)
    assert len(data) == 500 and list(data["labels"]) == [r["label"] for r in rows]
    first = data[0]
    assert len(first["input_ids"]) == 2  # one sequence per choice
    decoded = tokenizer.decode(first["input_ids"][1])
    assert rows[0]["choice2"].split()[0] in decoded
    with pytest.raises(ValueError, match="no train file for 'it'"):
        task.load("train", "it", tokenizer)
    with pytest.raises(ValueError, match="language 'xx' unknown"):
        task.examples("test", "xx")

    from fisherlab.tiny import tiny_adapter_model

    model = tiny_adapter_model("bert", head="multiple_choice", task_module="seq_bn", vocab=len(tokenizer),
                               max_positions=128)
    small = data.select(range(8))
    predictions = task.predict(model, small, tokenizer, batch_size=3)
    assert len(predictions) == 8 and set(predictions) <= {0, 1}


def test_xcopa_reports_bad_lines(tmp_path):
    (tmp_path / "xcopa" / "it").mkdir(parents=True)
    (tmp_path / "xcopa" / "it" / "test.it.jsonl").write_text(json.dumps({"premise": "p", "choice1": "a"}) + "\n")
    task = get_task("xcopa", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"test.it.jsonl:1 lacks field\(s\) \['choice2', 'question', 'label'\]"):
        task.examples("test", "it")


def test_xquad_windows_recover_the_gold_answers(shared_data):
    assert len(get_task("xquad", data_dir=shared_data).examples("test", "en")) == 1190
    task = get_task("xquad", data_dir=shared_data, max_length=128, stride=32, max_examples=60)
    assert task.head == "qa" and task.metric == "f1" and "de" in task.languages
    rows = task.examples("test", "en")
    tokenizer = _word_tokenizer([r["context"] + " " + r["question"] for r in rows], max_length=128)
    data = task.load("test", "en", tokenizer)
    assert len(data) > 60  # long contexts give several windows
    # Oracle logits at the labelled positions must reproduce the gold answers.
    starts, ends = [], []
    for row in data:
        n = len(row["input_ids"])
        s, e = torch.full((n,), -10.0), torch.full((n,), -10.0)
        if row["start_positions"] > 0:
            s[row["start_positions"]], e[row["end_positions"]] = 10.0, 10.0
        starts.append(s.tolist())
        ends.append(e.tolist())
    predictions, references = task.postprocess(data, starts, ends)
    assert len(predictions) == 60
    scores = task.compute_metrics(predictions, references)
    assert scores["f1"] == 100.0, [(p, r) for p, r in zip(predictions, references, strict=True) if p not in r]
    with pytest.raises(ValueError, match="XQuAD is test-only"):
        task.path("train", "de")


def test_xquad_evaluate_runs_a_qa_model(shared_data):
    from fisherlab.tiny import tiny_adapter_model

    task = get_task("xquad", data_dir=shared_data, max_length=64, stride=16, max_examples=5)
    rows = task.examples("test", "de")
    tokenizer = _word_tokenizer([r["context"] + " " + r["question"] for r in rows], max_length=64)
    data = task.load("test", "de", tokenizer)
    model = tiny_adapter_model("bert", head="qa", vocab=len(tokenizer), max_positions=64)
    scores = task.evaluate(model, data, tokenizer, batch_size=4)
    assert set(scores) == {"f1", "exact_match"} and 0.0 <= scores["f1"] <= 100.0


def test_xcopa_trains_on_english_copa_in_the_superglue_layout(shared_data, tmp_path):
    from task_helpers import FIXTURES

    (tmp_path / "xcopa").symlink_to(shared_data / "xcopa")
    (tmp_path / "COPA").symlink_to(FIXTURES / "copa" / "COPA")
    task = get_task("xcopa", data_dir=tmp_path)
    assert task.path("train", "en") == tmp_path / "COPA" / "train.jsonl"
    train = task.examples("train", "en")
    assert len(train) == 8 and train[0]["premise"] == "My body cast a shadow over the grass."
    assert [r["question"] for r in task.examples("validation", "en")] == ["effect"] * 4
    # SuperGLUE's COPA test set is unlabelled: an English test score needs a labelled file
    with pytest.raises(ValueError, match=r"COPA/test.jsonl:1 lacks field\(s\) \['label'\]"):
        task.examples("test", "en")
    (tmp_path / "copa").mkdir()
    (tmp_path / "copa" / "train.en.jsonl").write_text((FIXTURES / "copa" / "COPA" / "val.jsonl").read_text())
    assert task.path("train", "en") == tmp_path / "copa" / "train.en.jsonl"  # the copa/ layout is looked for first
