"""Task registry, metrics and the testbed task."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fisherlab.tasks import UnknownTaskError, available_tasks, get_task, register_task
from fisherlab.tasks.base import ClassificationTask, Task
from fisherlab.tasks.metrics import accuracy, normalize_answer, squad_exact_match, squad_f1


def test_unknown_task_lists_the_known_ones():
    from fisherlab.errors import FisherlabError

    with pytest.raises(UnknownTaskError, match="'xnlii' is not registered; known tasks: .*testbed"):
        get_task("xnlii")
    assert issubclass(UnknownTaskError, FisherlabError) and issubclass(UnknownTaskError, ValueError)
    assert {"mlqa", "pawsx", "testbed", "xcopa", "xnli", "xquad"} <= set(available_tasks())


def test_register_task_as_decorator_and_duplicates():
    @register_task("toy-test-task")
    class Toy(ClassificationTask):
        def __init__(self, languages=("en",)):
            self.name, self.languages = "toy", tuple(languages)

        def load(self, split, language, tokenizer=None):
            self.check_split(split, language)
            return []

    assert "toy-test-task" in available_tasks()
    task = get_task("toy-test-task", languages=("en", "de"))
    assert isinstance(task, Task) and task.languages == ("en", "de")
    with pytest.raises(ValueError, match="already registered"):
        register_task("toy-test-task", lambda: None)
    register_task("toy-test-task", Toy, replace=True)
    with pytest.raises(ValueError, match="language 'fr' unknown"):
        task.load("train", "fr")
    with pytest.raises(ValueError, match="split 'dev' unknown"):
        task.load("dev", "en")


def test_accuracy_in_percent():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 75.0
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        accuracy([0, 1, 2], [0, 1])


def test_squad_metrics_follow_the_official_script():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    # "cat sat" vs "cat sat on": precision 1, recall 2/3 -> F1 0.8
    assert squad_f1(["the cat sat"], [["a cat sat on"]]) == pytest.approx(80.0)
    assert squad_exact_match(["The cat."], [["cat", "dog"]]) == 100.0
    # best over gold answers, averaged over questions
    assert squad_f1(["red", "blue sky"], [["green", "red"], ["sky"]]) == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert squad_exact_match(["red", "blue sky"], [["green", "red"], ["sky"]]) == 50.0
    # both normalise to empty: the v1.1 script's F1 is 0 (no common token), its exact match 1
    assert squad_f1([""], [["a"]]) == 0.0
    assert squad_exact_match([""], [["a"]]) == 100.0
    with pytest.raises(ValueError, match=r"references\[0\]"):
        squad_f1(["x"], ["x"])


def test_testbed_task(tiny_testbed):
    task = get_task("testbed", path=tiny_testbed.root)
    assert isinstance(task, Task)
    assert task.head == "classification" and task.num_labels == tiny_testbed.config.categories
    assert task.languages == tiny_testbed.languages and task.source_language == "en"
    en, sov = task.load("test", "en"), task.load("test", "sov")
    assert len(en) == tiny_testbed.config.task.test_size
    assert list(en["labels"]) == list(sov["labels"])  # parallel test set
    assert list(en["input_ids"]) != list(sov["input_ids"])
    unk = task.tokenizer.unk_token_id
    assert all(unk not in ids for ids in list(en["input_ids"]) + list(sov["input_ids"]))
    assert set(task.load("train", "en")["labels"]) <= set(range(task.num_labels))
    defaults = task.model_defaults()
    assert defaults["base"] == tiny_testbed.base_dir and set(defaults["lang_adapters"]) == set(task.languages)
    with pytest.raises(ValueError, match="language 'xx' unknown"):
        task.load("test", "xx")


def test_testbed_task_evaluates_a_madx_model(tiny_testbed):
    from fisherlab.models import build_madx, swap_language

    task = get_task("testbed", path=tiny_testbed.root)
    model = build_madx(**task.model_defaults(), task=task)
    data = task.load("test", "sov")
    predictions = task.predict(model, data, task.tokenizer, batch_size=7)
    assert len(predictions) == len(data)
    result = task.evaluate(model, data, task.tokenizer)
    assert result == {"accuracy": accuracy(predictions, list(data["labels"]))}
    swap_language(model, "sov")
    assert 0.0 <= task.evaluate(model, data, task.tokenizer)["accuracy"] <= 100.0


def test_testbed_task_missing_path_is_named(tmp_path):
    with pytest.raises(ValueError, match="world.json"):
        get_task("testbed", path=tmp_path)


def test_importing_tasks_does_not_import_torch():
    code = "import sys, fisherlab.tasks, fisherlab.tasks.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pad_features_puts_the_batch_on_the_model_device(tiny_testbed):
    import torch

    from fisherlab.tasks.base import pad_features
    from fisherlab.torch_utils import model_device

    task = get_task("testbed", path=tiny_testbed.root)
    data = task.load("test", "sov")
    rows = data[0:3]
    columns = ["input_ids", "attention_mask"]
    assert pad_features(rows, columns, task.tokenizer)["input_ids"].device.type == "cpu"
    on_meta = pad_features(rows, columns, task.tokenizer, device="meta")
    assert {v.device.type for v in on_meta.values()} == {"meta"}
    assert model_device(torch.nn.Linear(2, 2, device="meta")).type == "meta"
    assert model_device(torch.nn.ReLU()).type == "cpu"


def test_cli_tasks_lists_every_task_with_its_languages():
    from typer.testing import CliRunner

    from fisherlab.cli import app
    from fisherlab.tasks import mlqa, pawsx, xnli
    from fisherlab.tasks.catalog import CATALOG

    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in available_tasks():
        assert any(line.startswith(f"{name}: ") for line in lines), name
    assert {info.name for info in CATALOG} <= set(available_tasks())
    xnli_line = next(line for line in lines if line.startswith("xnli: "))
    assert f"test {', '.join(xnli.LANGUAGES)};" in xnli_line and len(xnli.LANGUAGES) == 15
    assert f"test {', '.join(pawsx.LANGUAGES)};" in next(line for line in lines if line.startswith("pawsx: "))
    assert "facebook/mlqa@refs/convert/parquet" in result.output and len(mlqa.LANGUAGES) == 7
    code = "import sys, fisherlab.tasks.catalog, fisherlab.tasks.mlqa_metric; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_subset_of_rows_is_random_and_seeded():
    from datasets import Dataset

    from fisherlab.tasks.training import subset

    data = Dataset.from_dict({"x": list(range(100))})
    picked = list(subset(data, 10, seed=0)["x"])
    assert len(picked) == 10 and picked == sorted(picked) and picked != list(range(10))
    assert list(subset(data, 10, seed=0)["x"]) == picked and list(subset(data, 10, seed=1)["x"]) != picked
    with pytest.raises(ValueError, match="n must be positive"):
        subset(data, 0, seed=0)


def test_xcopa_hub_mapping(monkeypatch):
    import datasets

    calls = []
    features = datasets.Features({"premise": datasets.Value("string"), "choice1": datasets.Value("string"),
                                  "choice2": datasets.Value("string"), "question": datasets.Value("string"),
                                  "idx": datasets.Value("int32"), "label": datasets.Value("int32")})

    def fake_load_dataset(path, split=None, revision=None, data_dir=None, **kwargs):
        calls.append((path, split, revision, data_dir))
        label = -1 if split == "test" and data_dir == "copa" else 1
        return datasets.Dataset.from_dict({"premise": ["p"], "choice1": ["a"], "choice2": ["b"], "question": ["cause"],
                                           "idx": [0], "label": [label]}, features=features)

    monkeypatch.delenv("FISHERLAB_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = get_task("xcopa")
    assert task.source == "hub" and "qu" in task.languages
    row = {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 1}
    assert task.examples("test", "qu") == [row] and task.examples("train", "en") == [row]
    with pytest.raises(ValueError, match="no train split for 'qu'"):
        task.examples("train", "qu")
    with pytest.raises(ValueError, match=r"copa\) test row 0 label -1 is not in the label set \[0, 1\]"):
        task.examples("test", "en")  # SuperGLUE's COPA test set is unlabelled
    assert calls[:2] == [("cambridgeltl/xcopa", "test", "refs/convert/parquet", "qu"),
                         ("aps/super_glue", "train", "refs/convert/parquet", "copa")]
