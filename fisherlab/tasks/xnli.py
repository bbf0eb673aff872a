"""XNLI (Conneau et al., 2018): 3-way NLI in 15 languages; trained on English MultiNLI.

As in the FUN paper (Table 5: MNLI 392,702 train, XNLI English dev 2,490, test
5,010 per language) and Stickland & Murray (a random XNLI/MNLI training subset:
``max_train_samples`` with a seed).

Release files under the data directory:

* ``multinli_1.0/multinli_1.0_train.jsonl`` (MultiNLI 1.0): ``sentence1``,
  ``sentence2``, ``gold_label``; rows with ``gold_label`` ``-`` (no annotator
  consensus) are dropped and counted (``counts["dropped/train/en"]``);
* ``XNLI-1.0/xnli.dev.tsv`` and ``xnli.test.tsv``: tab-separated, unquoted, one
  header line, columns ``language``, ``gold_label``, ``sentence1``, ``sentence2``
  (and the parses, ids, genre, annotator labels).

Hub: ``nyu-mll/multi_nli`` (train) and ``facebook/xnli`` (config = language;
``validation``/``test``); columns ``premise``, ``hypothesis``, ``label``.
Labels: 0 entailment, 1 neutral, 2 contradiction (both releases' order).
"""

from __future__ import annotations

from typing import Any

from fisherlab.tasks._data import TaskDataError, label_index, read_jsonl, read_tsv, require_file
from fisherlab.tasks.hub import HUB_SOURCES, load_hub_split
from fisherlab.tasks.pairs import SentencePairTask

LANGUAGES = ("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
LABELS = ("entailment", "neutral", "contradiction")
MNLI_RELEASE = "MultiNLI 1.0 (https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip)"
XNLI_RELEASE = "XNLI 1.0 (https://dl.fbaipublicfiles.com/XNLI/XNLI-1.0.zip)"
_XNLI_FILES = {"validation": "xnli.dev.tsv", "test": "xnli.test.tsv"}


class XNLITask(SentencePairTask):
    """``get_task("xnli", data_dir=...)`` or ``get_task("xnli")`` (hub)."""

    name = "xnli"
    labels = LABELS
    all_languages = LANGUAGES

    def __init__(self, data_dir=None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self._by_language: dict[Any, dict[str, list[dict[str, Any]]]] = {}

    def _train_check(self, split: str, language: str) -> None:
        if split == "train" and language != self.source_language:
            raise TaskDataError(f"{self.name}: no train split for {language!r} (XNLI trains on English "
                                "MultiNLI; its other languages are dev/test only)")

    def file_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        self._train_check(split, language)
        if split == "train":
            path = require_file(self.root / "multinli_1.0" / "multinli_1.0_train.jsonl", self.name, MNLI_RELEASE)
            rows, dropped = [], 0
            for number, row in read_jsonl(path, self.name, ("sentence1", "sentence2", "gold_label")):
                if row["gold_label"] == "-":
                    dropped += 1
                    continue
                label = label_index(row["gold_label"], LABELS, f"{self.name}: {path}:{number}")
                rows.append({"text_a": row["sentence1"], "text_b": row["sentence2"], "label": label})
            self.count(f"dropped/{split}/{language}", dropped,
                       f"{path}: dropped {dropped} rows with gold_label '-' (no consensus)")
            return rows
        path = require_file(self.root / "XNLI-1.0" / _XNLI_FILES[split], self.name, XNLI_RELEASE)
        if path not in self._by_language:  # one file holds every language: parse it once
            grouped: dict[str, list[dict[str, Any]]] = {}
            for number, row in read_tsv(path, self.name, ("language", "gold_label", "sentence1", "sentence2")):
                label = label_index(row["gold_label"], LABELS, f"{self.name}: {path}:{number}")
                grouped.setdefault(row["language"], []).append(
                    {"text_a": row["sentence1"], "text_b": row["sentence2"], "label": label})
            self._by_language[path] = grouped
        rows = self._by_language[path].get(language, [])
        if not rows:
            raise TaskDataError(f"{self.name}: {path} has no rows with language {language!r}")
        return rows

    def hub_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        self._train_check(split, language)
        key = "multi_nli" if split == "train" else "xnli"
        data = load_hub_split(key, split, language, self.name, self.revisions)
        source = HUB_SOURCES[key]
        return self.hub_pairs(data, ("premise", "hypothesis"), f"{self.name}: {source.describe(language)} {split}",
                              drop_negative=True, key=f"dropped/{split}/{language}")
