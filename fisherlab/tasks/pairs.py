"""Sentence-pair classification tasks (XNLI, PAWS-X): one shape of example, two sources.

A subclass says where each split of each language comes from in the release
files (``file_examples``) and on the hub (``hub_examples``); this class picks the
source, caches, truncates for smoke runs and tokenizes pairs
``(text_a, text_b)`` into a ``datasets.Dataset`` with ``labels``.
Examples are ``{"text_a": str, "text_b": str, "label": int}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fisherlab.tasks._data import TaskDataError, choose_source
from fisherlab.tasks.base import ClassificationTask

logger = logging.getLogger(__name__)


class SentencePairTask(ClassificationTask):
    """Shared constructor, source selection and tokenization of pair tasks.

    ``source``: ``"files"`` (release files under ``data_dir``/``$FISHERLAB_DATA``),
    ``"hub"`` (``datasets.load_dataset``) or None (files when a data directory is
    given or ``$FISHERLAB_DATA`` is set, else the hub). ``revisions`` (HUB_SOURCES key ->
    revision) override the pinned hub revisions; ``max_examples`` keeps the first n examples of a split
    (smoke runs); ``max_length`` truncates the pair.
    """

    head = "classification"
    labels: tuple[str, ...] = ()
    all_languages: tuple[str, ...] = ()

    def __init__(self, data_dir: str | Path | None = None, *, source: str | None = None,
                 revisions: dict[str, str] | None = None, max_length: int = 128, max_examples: int | None = None,
                 name: str = "") -> None:
        self.name = name or type(self).name
        self.source, self.root = choose_source(data_dir, source, self.name)
        self.revisions = dict(revisions or {})
        self.max_length = max_length
        self.max_examples = max_examples
        self.num_labels = len(self.labels)
        self.languages = self.all_languages
        self.source_language = "en"
        self.counts: dict[str, int] = {}  # e.g. "dropped/train/en": rows without a gold label
        self._cache: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def count(self, key: str, n: int, message: str) -> None:
        """Record (and log) ``n`` rows of a kind the release has, e.g. dropped or empty rows."""
        self.counts[key] = n
        if n:
            logger.warning("%s: %s", self.name, message)

    def file_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def hub_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def all_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        """Every untokenized example of ``split`` in ``language`` (validated; cached)."""
        self.check_split(split, language)
        key = (split, language)
        if key not in self._cache:
            read = self.file_examples if self.source == "files" else self.hub_examples
            self._cache[key] = read(split, language)
        return self._cache[key]

    def examples(self, split: str, language: str) -> list[dict[str, Any]]:
        """``all_examples``, the first ``max_examples`` of them when that is set."""
        rows = self.all_examples(split, language)
        return rows[: self.max_examples] if self.max_examples is not None else rows

    def load(self, split: str, language: str, tokenizer: Any = None):
        """Tokenized pairs: ``input_ids``, ``attention_mask`` (``token_type_ids``) and ``labels``."""
        from datasets import Dataset

        if tokenizer is None:
            raise TaskDataError(f"{self.name}: load needs the model's tokenizer")
        rows = self.examples(split, language)
        enc = tokenizer([r["text_a"] for r in rows], [r["text_b"] for r in rows], truncation=True,
                        max_length=self.max_length)
        return Dataset.from_dict({**{k: enc[k] for k in enc.keys()}, "labels": [r["label"] for r in rows]})

    def hub_pairs(self, dataset: Any, columns: tuple[str, str], where: str, drop_negative: bool = False,
                  key: str = "") -> list[dict[str, Any]]:
        """Examples from a hub split with text ``columns`` and an int ``label`` column.

        ``drop_negative`` drops label -1 (rows without a gold label, counted under ``key``);
        any other label outside ``range(num_labels)`` is an error.
        """
        first, second = columns
        rows, dropped = [], 0
        for i, (a, b, label) in enumerate(zip(dataset[first], dataset[second], dataset["label"], strict=True)):
            if drop_negative and label == -1:
                dropped += 1
                continue
            if not isinstance(label, int) or not 0 <= label < self.num_labels:
                raise TaskDataError(f"{where} row {i}: label {label!r} is not in the label set "
                                    f"{list(range(self.num_labels))} ({list(self.labels)})")
            rows.append({"text_a": a or "", "text_b": b or "", "label": label})
        if key:
            self.count(key, dropped, f"{where}: dropped {dropped} rows without a gold label (-1)")
        return rows
