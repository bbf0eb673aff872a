"""Bad input to the release-file loaders: each error names the language set, the missing path and its
release, or the file and line of a malformed row / a label outside the label set."""

from __future__ import annotations

import json

import pytest
from task_helpers import FIXTURES, with_edited_line

from fisherlab.tasks import get_task
from fisherlab.tasks._data import TaskDataError

_DROP_PARAGRAPHS = lambda line: json.dumps({"data": [{"title": "x"}]})  # noqa: E731

CASES = [
    # task, fixture, (file, line, edit) or None, split, language, error type, message
    ("xnli", "xnli", None, "test", "xx", ValueError, r"language 'xx' unknown; this task has \['en', 'ar'"),
    ("xnli", "xnli", None, "train", "de", TaskDataError, "no train split for 'de'"),
    ("xnli", "xnli", None, "test", "fr", TaskDataError, "has no rows with language 'fr'"),
    ("xnli", None, None, "train", "en", TaskDataError,
     r"multinli_1.0/multinli_1.0_train.jsonl does not exist; it is part of MultiNLI 1.0 \(http"),
    ("xnli", None, None, "validation", "en", TaskDataError,
     r"XNLI-1.0/xnli.dev.tsv does not exist; it is part of XNLI 1.0 \(http"),
    ("xnli", "xnli", ("XNLI-1.0/xnli.dev.tsv", 4, lambda line: line.replace("\t", " ", 2)), "validation", "en",
     TaskDataError, r"xnli.dev.tsv:4 has 17 tab-separated fields, expected 19"),
    ("xnli", "xnli", ("XNLI-1.0/xnli.dev.tsv", 3, lambda line: line.replace("contradiction", "contra", 1)),
     "validation", "en", TaskDataError, r"xnli.dev.tsv:3: label 'contra' is not in the label set"),
    ("xnli", "xnli", ("multinli_1.0/multinli_1.0_train.jsonl", 2, lambda line: line[:-1]), "train", "en",
     TaskDataError, r"multinli_1.0_train.jsonl:2 is not JSON"),
    ("pawsx", "pawsx", None, "test", "it", ValueError, r"language 'it' unknown; this task has \['en', 'de', 'es'"),
    ("pawsx", "pawsx", None, "test", "fr", TaskDataError,
     r"x-final/fr/test_2k.tsv does not exist; it is part of PAWS-X \(http"),
    ("pawsx", "pawsx", ("x-final/en/dev_2k.tsv", 3, lambda line: line.rsplit("\t", 1)[0] + "\t2"), "validation",
     "en", TaskDataError, r"dev_2k.tsv:3: label '2' is not in the label set \['0', '1'\]"),
    ("pawsx", "pawsx", ("x-final/en/dev_2k.tsv", 5, lambda line: line.rsplit("\t", 1)[0]), "validation", "en",
     TaskDataError, r"dev_2k.tsv:5 has 3 tab-separated fields, expected 4"),
    ("mlqa", "mlqa", None, "test", "fr", ValueError, r"language 'fr' unknown; this task has \['en', 'ar'"),
    ("mlqa", "mlqa", None, "train", "de", TaskDataError, "no train split for 'de'"),
    ("mlqa", "mlqa", None, "test", "hi", TaskDataError,
     r"MLQA_V1/test/test-context-hi-question-hi.json does not exist; it is part of MLQA v1 \(http"),
    ("mlqa", None, None, "train", "en", TaskDataError, r"squad/train-v1.1.json does not exist; it is part of SQuAD v1.1"),
    ("mlqa", "mlqa", ("MLQA_V1/test/test-context-de-question-de.json", 1, _DROP_PARAGRAPHS), "test", "de",
     TaskDataError, r"test-context-de-question-de.json is not in SQuAD format \(KeyError\('paragraphs'"),
]


@pytest.mark.parametrize("task,fixture,edit,split,language,error,message", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_named(tmp_path, task, fixture, edit, split, language, error, message):
    data_dir = FIXTURES / fixture if fixture else tmp_path
    if edit:
        data_dir = with_edited_line(data_dir, tmp_path / "edited", *edit)
    with pytest.raises(error, match=message):
        get_task(task, data_dir=data_dir).examples(split, language)


def test_unknown_source_is_named():
    with pytest.raises(TaskDataError, match=r"source 'ftp' unknown; expected one of \('files', 'hub'\)"):
        get_task("xnli", data_dir=FIXTURES / "xnli", source="ftp")
