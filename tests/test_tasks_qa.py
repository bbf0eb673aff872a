"""MLQA (and the QA code it shares with XQuAD): release files, windows, decoding, metrics, hub, training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from task_helpers import FIXTURES, fixture_texts, train_steps, word_tokenizer

from fisherlab.tasks import get_task
from fisherlab.tasks.qa import window_features
from fisherlab.tasks.training import subset

MLQA = FIXTURES / "mlqa"
MAX_LENGTH, STRIDE = 40, 12

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(fixture_texts(MLQA), max_length=MAX_LENGTH)


def _task(**options):
    return get_task("mlqa", data_dir=MLQA, max_length=MAX_LENGTH, stride=STRIDE, **options)


def _oracle_logits(data):
    """Logits peaked at each window's labelled span (flat where the answer is not in the window)."""
    starts, ends = [], []
    for row in data:
        s, e = np.full(len(row["input_ids"]), -10.0), np.full(len(row["input_ids"]), -10.0)
        if row["start_positions"] > 0:
            s[row["start_positions"]], e[row["end_positions"]] = 10.0, 10.0
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_files_and_splits():
    task = _task()
    assert task.head == "qa" and task.metric == "f1" and task.languages == ("en", "ar", "de", "es", "hi", "vi", "zh")
    assert len(task.examples("train", "en")) == 9  # SQuAD v1.1 train
    dev = task.examples("validation", "en")  # SQuAD v1.1 dev: the FUN paper's English validation set
    assert len(dev) == 4 and dev[2]["answers"] == ["Santa Clara, California", "Levi's Stadium",
                                                   "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California."]
    assert len(task.examples("validation", "de")) == 2  # MLQA dev-context-de-question-de
    zh = task.examples("test", "zh")
    assert zh[0]["answers"] == ["布里斯托尔飞机公司"] and zh[0]["context"][zh[0]["answer_starts"][0]:].startswith("布里斯托尔飞机公司")
    assert (task.metric_language("validation", "en"), task.metric_language("validation", "de")) == (None, "de")


def test_windows_label_answers_inside_and_only_inside(tokenizer):
    task = _task()
    straddling = 0
    for split, language in (("train", "en"), ("validation", "en"), ("test", "de"), ("test", "zh")):
        rows = task.examples(split, language)
        by_id = {r["id"]: r for r in rows}
        data = task.load(split, language, tokenizer)
        # training windows carry no offsets: the same windows built for evaluation show them
        full = window_features(rows, tokenizer, MAX_LENGTH, STRIDE, evaluation=True, language=None)
        assert list(data["start_positions"]) == full["start_positions"] and list(data["example_id"]) == full["example_id"]
        assert ("offset_mapping" in data.column_names) == (split != "train")
        assert len(set(full["example_id"])) == len(rows)
        for i, offsets in enumerate(full["offset_mapping"]):
            example = by_id[full["example_id"][i]]
            a_start = example["answer_starts"][0]
            a_end = a_start + len(example["answers"][0])
            context = [o for o in offsets if o[0] >= 0]
            s, e = full["start_positions"][i], full["end_positions"][i]
            if context[0][0] <= a_start and context[-1][1] >= a_end:  # the whole answer is in the window
                assert example["context"][offsets[s][0]:offsets[e][1]] == example["answers"][0]
            else:
                assert (s, e) == (0, 0)  # [CLS]: also when the window holds only part of the answer
                straddling += context[0][0] < a_end and context[-1][1] > a_start
    assert straddling > 0, "no window cuts an answer: the fixture must cover that case"


def test_oracle_decoding_and_trainer_metrics(tokenizer):
    task = _task()
    for language in ("de", "zh", "en"):
        data = task.load("test", language, tokenizer)
        assert set(data["language"]) == {language}
        predictions, references = task.postprocess(data, *_oracle_logits(data))
        assert task.compute_metrics(predictions, references, language) == {"f1": 100.0, "exact_match": 100.0}
    # the Trainer hands over padded (N, L) arrays: -100 past each window
    data = task.load("validation", "en", tokenizer)
    starts, ends = _oracle_logits(data)
    width = max(len(s) for s in starts)
    pad = lambda rows: np.stack([np.pad(r, (0, width - len(r)), constant_values=-100.0) for r in rows])  # noqa: E731
    compute = task.trainer_compute_metrics(data)
    scores = compute(SimpleNamespace(predictions=(pad(starts), pad(ends)), label_ids=None))
    assert scores == {"f1": 100.0, "exact_match": 100.0}
    # a wrong span scores by the MLQA rules in zh (characters are tokens)
    assert task.compute_metrics(["布里斯托尔"], [["布里斯托尔飞机公司"]], "zh")["f1"] == pytest.approx(100 * 2 * 5 / 14)


def test_subset_draws_whole_questions(tokenizer):
    data = _task().load("train", "en", tokenizer)
    ids = list(data["example_id"])
    picked = subset(data, 3, seed=0)
    chosen = set(picked["example_id"])
    assert len(chosen) == 3 and len(picked) == sum(i in chosen for i in ids)
    assert list(subset(data, 3, seed=0)["example_id"]) == list(picked["example_id"])
    assert set(subset(data, 3, seed=1)["example_id"]) != chosen or set(subset(data, 3, seed=2)["example_id"]) != chosen
    assert subset(data, 100, seed=0) is data and subset(data, None, seed=0) is data


def test_hub_mapping(monkeypatch):
    import datasets

    calls = []
    answers = datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})
    columns = {"id": datasets.Value("string"), "context": datasets.Value("string"),
               "question": datasets.Value("string"), "answers": answers}

    def fake_load_dataset(path, name=None, split=None, revision=None, data_dir=None, **kwargs):
        calls.append((path, name, split, revision, data_dir))
        features = datasets.Features({**columns, "title": datasets.Value("string")} if "squad" in path else columns)
        row = {"id": ["q1"], "context": ["Der Hund bellt."], "question": ["Wer bellt?"],
               "answers": [{"text": ["Der Hund"], "answer_start": [0]}]}
        if "squad" in path:
            row["title"] = ["t"]
        return datasets.Dataset.from_dict(row, features=features)

    monkeypatch.delenv("FISHERLAB_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    expected = [{"id": "q1", "question": "Wer bellt?", "context": "Der Hund bellt.", "answers": ["Der Hund"],
                 "answer_starts": [0]}]
    mlqa = get_task("mlqa")
    assert mlqa.examples("test", "de") == expected and mlqa.examples("train", "en") == expected
    xquad = get_task("xquad")
    assert xquad.languages[0] == "en" and len(xquad.languages) == 12
    assert xquad.examples("test", "de") == expected
    assert calls == [("facebook/mlqa", None, "test", "refs/convert/parquet", "mlqa.de.de"),
                     ("rajpurkar/squad", "plain_text", "train", "main", None),
                     ("google/xquad", "xquad.de", "validation", "main", None)]


def test_20_training_steps(tokenizer):
    task = _task()
    data = task.load("train", "en", tokenizer)
    losses = train_steps(task, data, tokenizer)
    assert losses[-1] < 0.5 * losses[0], losses
