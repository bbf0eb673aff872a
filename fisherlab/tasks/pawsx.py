"""PAWS-X (Yang et al., 2019): paraphrase identification in 7 languages; trained on English PAWS.

Zero-shot: train on English (``en/train.tsv``, 49,401 pairs), test on de, es, fr,
ja, ko, zh (and en). Binary labels: 1 paraphrase, 0 not.

Release layout (``x-final.tar.gz`` unpacked under the data directory):
``x-final/<lang>/train.tsv`` (en) or ``translated_train.tsv`` (the other languages,
machine-translated), ``dev_2k.tsv``, ``test_2k.tsv``; tab-separated, one header
line ``id sentence1 sentence2 label``. Some translated rows have an empty
sentence; the release keeps them (they count in its test accuracy), so they are
kept here too, and counted (``counts["empty/<split>/<lang>"]``, logged).

Two-stage protocol (Stickland & Murray, Figure 2): with ``dev_halves=True`` a
non-source language's ``train`` split is one half of its 2,000 dev examples and
its ``validation`` split the other half (a permutation seeded by ``halves_seed``;
1,000 each), so a model trained on English can be fine-tuned further in de, es or zh.

Hub: ``google-research-datasets/paws-x`` (config = language; ``train``,
``validation``, ``test``; columns ``id``, ``sentence1``, ``sentence2``, ``label``).
"""

from __future__ import annotations

import random
from typing import Any

from fisherlab.tasks._data import TaskDataError, label_index, read_tsv, require_file
from fisherlab.tasks.hub import HUB_SOURCES, load_hub_split
from fisherlab.tasks.pairs import SentencePairTask

LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "zh")
LABELS = ("0", "1")
RELEASE = "PAWS-X (https://storage.googleapis.com/paws/pawsx/x-final.tar.gz)"
_FILES = {"validation": "dev_2k.tsv", "test": "test_2k.tsv"}
_HUB_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


class PAWSXTask(SentencePairTask):
    """``get_task("pawsx", data_dir=...)``; ``dev_halves=True`` for the two-stage protocol."""

    name = "pawsx"
    labels = LABELS
    all_languages = LANGUAGES

    def __init__(self, data_dir=None, *, dev_halves: bool = False, halves_seed: int = 0, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.dev_halves = dev_halves
        self.halves_seed = halves_seed

    def all_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        if not (self.dev_halves and language != self.source_language and split != "test"):
            return super().all_examples(split, language)
        rows = super().all_examples("validation", language)  # the whole dev set, split in two
        order = list(range(len(rows)))
        random.Random(self.halves_seed).shuffle(order)
        half = len(order) // 2
        return [rows[i] for i in sorted(order[:half] if split == "train" else order[half:])]

    def file_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        if split == "train":
            stem = "train.tsv" if language == "en" else "translated_train.tsv"
        else:
            stem = _FILES[split]
        path = require_file(self.root / "x-final" / language / stem, self.name, RELEASE)
        rows, empty = [], 0
        for number, row in read_tsv(path, self.name, ("id", "sentence1", "sentence2", "label")):
            label = label_index(row["label"], LABELS, f"{self.name}: {path}:{number}")
            empty += not row["sentence1"].strip() or not row["sentence2"].strip()
            rows.append({"text_a": row["sentence1"], "text_b": row["sentence2"], "label": label})
        self.count(f"empty/{split}/{language}", empty,
                   f"{path}: {empty} rows with an empty sentence (kept, as in the release)")
        return rows

    def hub_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        data = load_hub_split("paws-x", _HUB_SPLITS[split], language, self.name, self.revisions)
        where = f"{self.name}: {HUB_SOURCES['paws-x'].describe(language)} {split}"
        rows = self.hub_pairs(data, ("sentence1", "sentence2"), where)
        empty = sum(not r["text_a"].strip() or not r["text_b"].strip() for r in rows)
        self.count(f"empty/{split}/{language}", empty, f"{where}: {empty} rows with an empty sentence (kept)")
        return rows


__all__ = ["LABELS", "LANGUAGES", "PAWSXTask", "TaskDataError"]
