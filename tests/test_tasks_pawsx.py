"""PAWS-X: the x-final release layout (fixtures), empty sentences, dev halves, hub mapping, training."""

from __future__ import annotations

import pytest
from task_helpers import FIXTURES, fixture_texts, train_steps, word_tokenizer

from fisherlab.tasks import get_task

PAWSX = FIXTURES / "pawsx"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_files_load_and_empty_sentences_are_kept_and_counted():
    task = get_task("pawsx", data_dir=PAWSX)
    assert task.languages == ("en", "de", "es", "fr", "ja", "ko", "zh") and task.num_labels == 2
    train = task.examples("train", "en")  # en/train.tsv
    assert len(train) == 8 and train[1]["label"] == 1 and train[0]["label"] == 0
    assert train[0]["text_a"].startswith("In Paris , in October 1560")
    assert len(task.examples("train", "de")) == 5  # de/translated_train.tsv
    test = task.examples("test", "de")
    assert len(test) == 5 and test[0] == {"text_a": "Wenn vergleichbare Durchflussraten aufrechterhalten werden "
                                                    "können , sind die Ergebnisse hoch .", "text_b": "", "label": 1}
    assert task.counts["empty/test/de"] == 1
    assert test[-1]["text_a"] == 'Sie ist die "Königin" des Dorfes .'  # quotes are text
    assert task.examples("test", "zh")[3]["text_a"] == "" and task.counts["empty/test/zh"] == 1
    assert task.counts["empty/train/en"] == 0


def test_dev_halves_for_the_two_stage_protocol():
    task = get_task("pawsx", data_dir=PAWSX, dev_halves=True, halves_seed=3)
    dev = get_task("pawsx", data_dir=PAWSX).examples("validation", "de")  # the whole dev set
    first, second = task.examples("train", "de"), task.examples("validation", "de")
    assert len(first) == len(second) == len(dev) // 2 == 4
    key = lambda r: (r["text_a"], r["text_b"])  # noqa: E731
    assert sorted(map(key, first + second)) == sorted(map(key, dev))  # a partition of the dev set
    assert task.examples("train", "de") == first  # deterministic
    other = get_task("pawsx", data_dir=PAWSX, dev_halves=True, halves_seed=4)
    assert other.examples("train", "de") != first or other.examples("validation", "de") != second
    assert task.examples("train", "en") == get_task("pawsx", data_dir=PAWSX).examples("train", "en")
    assert len(task.examples("test", "de")) == 5  # test untouched


def test_hub_mapping(monkeypatch):
    import datasets

    calls = []
    features = datasets.Features({"id": datasets.Value("int32"), "sentence1": datasets.Value("string"),
                                  "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["0", "1"])})

    def fake_load_dataset(path, name=None, split=None, revision=None, **kwargs):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_dict({"id": [1, 2], "sentence1": ["a b", ""], "sentence2": ["b a", "c"],
                                           "label": [1, 0]}, features=features)

    monkeypatch.delenv("FISHERLAB_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = get_task("pawsx")
    assert task.examples("validation", "ja") == [{"text_a": "a b", "text_b": "b a", "label": 1},
                                                 {"text_a": "", "text_b": "c", "label": 0}]
    assert task.counts["empty/validation/ja"] == 1
    assert calls == [("google-research-datasets/paws-x", "ja", "validation", "main")]


def test_tokenized_pairs_and_20_training_steps():
    tokenizer = word_tokenizer(fixture_texts(PAWSX), max_length=96)
    task = get_task("pawsx", data_dir=PAWSX, max_length=96)
    data = task.load("train", "en", tokenizer)
    assert len(data) == 8 and list(data["labels"]) == [0, 1, 0, 1, 1, 1, 0, 0]
    empty = task.load("test", "de", tokenizer)[0]
    assert tokenizer.decode(empty["input_ids"]).endswith("hoch . [SEP] [SEP]")  # empty second sentence
    losses = train_steps(task, data, tokenizer)
    assert losses[-1] < 0.5 * losses[0], losses
