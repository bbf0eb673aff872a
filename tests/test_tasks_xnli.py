"""XNLI: MultiNLI + XNLI-1.0 release files (fixtures), the hub mapping (load_dataset patched), training."""

from __future__ import annotations

import pytest
from task_helpers import FIXTURES, fixture_texts, train_steps, word_tokenizer

from fisherlab.tasks import get_task
from fisherlab.tasks.xnli import LABELS

XNLI = FIXTURES / "xnli"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(fixture_texts(XNLI), max_length=64)


def test_files_load_with_the_release_labels():
    task = get_task("xnli", data_dir=XNLI)
    assert task.source == "files" and task.head == "classification" and task.num_labels == 3
    assert len(task.languages) == 15 and task.source_language == "en"
    train = task.examples("train", "en")
    # 14 MultiNLI rows, two with gold_label '-' (no consensus) dropped and counted
    assert len(train) == 12 and task.counts["dropped/train/en"] == 2
    assert train[0] == {"text_a": "Conceptually cream skimming has two basic dimensions - product and geography.",
                        "text_b": "Product and geography are what make cream skimming work. ", "label": 1}
    assert [r["label"] for r in train].count(LABELS.index("contradiction")) == 4
    dev = task.examples("validation", "de")
    assert len(dev) == 5 and dev[1] == {"text_a": "und er hat gesagt, Mama ich bin daheim.",
                                        "text_b": "Er sagte kein Wort.", "label": 2}
    assert dev[4]["text_a"] == 'Er sagte "gut" und ging.'  # unquoted TSV: quotes are text
    test = task.examples("test", "zh")
    assert len(test) == 5 and test[0]["text_b"] == "他一个字也没说。" and test[0]["label"] == 2


def test_hub_mapping(monkeypatch):
    import datasets

    calls = []
    label = datasets.ClassLabel(names=list(LABELS))

    def fake_load_dataset(path, name=None, split=None, revision=None, **kwargs):
        calls.append((path, name, split, revision))
        if path == "nyu-mll/multi_nli":
            features = datasets.Features({"promptID": datasets.Value("int32"), "pairID": datasets.Value("string"),
                                          "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                          "genre": datasets.Value("string"), "label": label})
            return datasets.Dataset.from_dict({"promptID": [1, 2, 3], "pairID": ["1e", "2n", "3c"],
                                               "premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"],
                                               "genre": ["fiction"] * 3, "label": [0, -1, 2]}, features=features)
        features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                      "label": label})
        return datasets.Dataset.from_dict({"premise": ["Er ging."], "hypothesis": ["Er blieb."], "label": [2]},
                                          features=features)

    monkeypatch.delenv("FISHERLAB_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = get_task("xnli", revisions={"xnli": "abc123"})
    assert task.source == "hub"
    assert task.examples("train", "en") == [{"text_a": "p1", "text_b": "h1", "label": 0},
                                            {"text_a": "p3", "text_b": "h3", "label": 2}]
    assert task.counts["dropped/train/en"] == 1
    assert task.examples("test", "de") == [{"text_a": "Er ging.", "text_b": "Er blieb.", "label": 2}]
    assert calls == [("nyu-mll/multi_nli", None, "train", "main"), ("facebook/xnli", "de", "test", "abc123")]


def test_tokenized_pairs_and_20_training_steps(tokenizer):
    task = get_task("xnli", data_dir=XNLI, max_length=64)
    data = task.load("train", "en", tokenizer)
    assert list(data["labels"]) == [r["label"] for r in task.examples("train", "en")]
    first = data[0]
    assert first["token_type_ids"].count(1) > 0  # a pair: the hypothesis is segment 1
    decoded = tokenizer.decode(first["input_ids"])
    assert "cream skimming" in decoded and "make cream skimming work" in decoded
    losses = train_steps(task, data, tokenizer)
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0], losses
