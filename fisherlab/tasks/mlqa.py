"""MLQA (Lewis et al., 2020): extractive QA in 7 languages; trained on English SQuAD v1.1.

As in the FUN paper: train on SQuAD v1.1 train, validate on SQuAD v1.1 dev (the
English validation set of its Table 5), test zero-shot on MLQA with context and
question in the same language (``en``, ``ar``, ``de``, ``es``, ``hi``, ``vi``,
``zh``). The ``validation`` split of a non-source language is MLQA's dev set.

Release files: ``<data_dir>/MLQA_V1/test/test-context-<l>-question-<l>.json`` and
``MLQA_V1/dev/dev-context-<l>-question-<l>.json`` (SQuAD format), SQuAD under
``<data_dir>/squad/``. Hub: ``facebook/mlqa`` from its parquet conversion
(``refs/convert/parquet``, folder ``mlqa.<l>.<l>``; the repository's own
loading script does not run with ``datasets`` >= 4) and ``rajpurkar/squad``.
Metric: ``mlqa_evaluation_v1.py`` (``fisherlab.tasks.mlqa_metric``) in the
context language; SQuAD's script on the SQuAD dev set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fisherlab.tasks._data import TaskDataError
from fisherlab.tasks.hub import load_hub_split
from fisherlab.tasks.mlqa_metric import mlqa_scores
from fisherlab.tasks.qa import QATask, hub_squad_rows, read_squad
from fisherlab.tasks.xquad import SQUAD_RELEASE, squad_path

LANGUAGES = ("en", "ar", "de", "es", "hi", "vi", "zh")
RELEASE = "MLQA v1 (https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip)"
_FILE_SPLITS = {"validation": "dev", "test": "test"}


class MLQATask(QATask):
    """``get_task("mlqa", data_dir=...)`` or ``get_task("mlqa")`` (hub)."""

    def __init__(self, data_dir: str | Path | None = None, *, source: str | None = None,
                 revisions: dict[str, str] | None = None, max_length: int = 384, stride: int = 128,
                 max_answer_length: int = 30, n_best: int = 20, max_examples: int | None = None,
                 name: str = "mlqa") -> None:
        self.name = name
        self.configure(data_dir, source, revisions, max_length, stride, max_answer_length, n_best, max_examples)
        self.root = self.data
        self.languages = LANGUAGES
        self.source_language = "en"

    def _check_train(self, split: str, language: str) -> None:
        self.check_split(split, language)
        if split == "train" and language != self.source_language:
            raise TaskDataError(f"{self.name}: no train split for {language!r} (MLQA trains on English SQuAD v1.1)")

    def _from_squad(self, split: str, language: str) -> bool:
        return split == "train" or (split == "validation" and language == self.source_language)

    def metric_language(self, split: str, language: str) -> str | None:
        return None if self._from_squad(split, language) else language

    def path(self, split: str, language: str) -> Path:
        """The release file of ``split`` in ``language`` (files source)."""
        self._check_train(split, language)
        if self._from_squad(split, language):
            return squad_path(self.root, split)
        kind = _FILE_SPLITS[split]
        return self.root / "MLQA_V1" / kind / f"{kind}-context-{language}-question-{language}.json"

    def read_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        if self.source == "files":
            path = self.path(split, language)
            return read_squad(path, self.name, SQUAD_RELEASE if self._from_squad(split, language) else RELEASE)
        self._check_train(split, language)
        if self._from_squad(split, language):
            return hub_squad_rows(load_hub_split("squad", split, None, self.name, self.revisions))
        return hub_squad_rows(load_hub_split("mlqa", split, language, self.name, self.revisions))

    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]],
              language: str | None) -> dict[str, float]:
        """The MLQA script in answer language ``language``; SQuAD's script for SQuAD data (None)."""
        if language is None:
            return super().score(predictions, references, None)
        return mlqa_scores(predictions, references, language)
