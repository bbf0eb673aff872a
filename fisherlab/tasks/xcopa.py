"""XCOPA (Ponti et al., 2020): causal commonsense reasoning, two choices; trained on English COPA.

Files (the layout of the XCOPA release): ``<data_dir>/xcopa/<lang>/{val,test}.<lang>.jsonl``
and, for the English source, English COPA as the FUN paper used it (Table 5: 400
train, 100 validation): the SuperGLUE release ``<data_dir>/COPA/{train,val,test}.jsonl``
(its ``test.jsonl`` is unlabelled, so English test needs a labelled file) or
``<data_dir>/copa/{train,val,test}.en.jsonl`` (same fields; looked for first). Each choice is encoded as the pair ``(premise + question prompt, choice)``;
the prompt is English for every language (XCOPA's ``question`` field is English).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fisherlab.tasks._data import TaskDataError, choose_source, read_jsonl
from fisherlab.tasks.base import ClassificationTask
from fisherlab.tasks.hub import HUB_SOURCES, load_hub_split

LANGUAGES = ("en", "et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
RELEASE = "XCOPA (https://github.com/cambridgeltl/xcopa, data/<lang>/)"
COPA_RELEASE = "SuperGLUE COPA (https://dl.fbaipublicfiles.com/glue/superglue/data/v2/COPA.zip)"

PROMPTS = {"cause": "What was the cause?", "effect": "What happened as a result?"}
_SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}
_HUB_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_FIELDS = ("premise", "choice1", "choice2", "question", "label")


class XCOPATask(ClassificationTask):
    """``get_task("xcopa", data_dir=...)``: languages are the XCOPA folders found, plus the source;
    ``get_task("xcopa")`` (hub): ``cambridgeltl/xcopa`` and SuperGLUE's COPA (``aps/super_glue``).

    ``max_examples`` keeps the first n examples of each file (smoke runs).
    """

    head = "multiple_choice"
    num_labels = 2
    metric = "accuracy"

    def __init__(self, data_dir: str | Path | None = None, *, source: str | None = None,
                 revisions: dict[str, str] | None = None, source_language: str = "en",
                 max_length: int = 128, max_examples: int | None = None, name: str = "xcopa") -> None:
        self.name = name
        self.max_examples = max_examples
        self.source, data = choose_source(data_dir, source, name)
        self.revisions = dict(revisions or {})
        self.source_language = source_language
        self.max_length = max_length
        self.languages = LANGUAGES
        if data is None:  # hub
            return
        self.root = data / "xcopa" if (data / "xcopa").is_dir() else data
        self.copa_root = self.root.parent / "copa"
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))
        if not found:
            raise TaskDataError(f"{name}: no <lang>/*.jsonl folders under {self.root} (from {RELEASE})")
        self.languages = tuple(dict.fromkeys([source_language, *found]))

    def path(self, split: str, language: str) -> Path:
        self.check_split(split, language)
        stem = f"{_SPLIT_FILES[split]}.{language}.jsonl"
        if language == self.source_language and not (self.root / language).is_dir():
            superglue = self.root.parent / "COPA" / f"{_SPLIT_FILES[split]}.jsonl"
            return superglue if not (self.copa_root / stem).is_file() and superglue.is_file() else self.copa_root / stem
        return self.root / language / stem

    def examples(self, split: str, language: str) -> list[dict[str, Any]]:
        """The raw examples, validated (file and line, or hub row, named on error)."""
        if self.source == "hub":
            rows = self._hub_rows(split, language)
        else:
            rows = self._file_rows(split, language)
        return rows[: self.max_examples] if self.max_examples is not None else rows

    def _check_row(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        if row["question"] not in PROMPTS:
            raise TaskDataError(f"{where} question {row['question']!r} not in {list(PROMPTS)}")
        if row["label"] not in (0, 1):
            raise TaskDataError(f"{where} label {row['label']!r} is not in the label set [0, 1]")
        return row

    def _file_rows(self, split: str, language: str) -> list[dict[str, Any]]:
        path = self.path(split, language)
        if not path.is_file():
            hint = " (XCOPA has only val/test; train on English COPA)" if split == "train" else ""
            release = COPA_RELEASE if language == self.source_language else RELEASE
            raise TaskDataError(f"{self.name}: no {split} file for {language!r}: {path} does not exist{hint}; "
                                f"it is part of {release}")
        return [self._check_row(row, f"{self.name}: {path}:{number}")
                for number, row in read_jsonl(path, self.name, _FIELDS)]

    def _hub_rows(self, split: str, language: str) -> list[dict[str, Any]]:
        self.check_split(split, language)
        key = "copa" if language == self.source_language else "xcopa"
        if key == "xcopa" and split == "train":
            raise TaskDataError(f"{self.name}: no train split for {language!r} (XCOPA has only validation/test; "
                                "train on English COPA)")
        data = load_hub_split(key, _HUB_SPLITS[split], language, self.name, self.revisions)
        where = f"{self.name}: {HUB_SOURCES[key].describe(language)} {split} row"
        return [self._check_row({f: row[f] for f in _FIELDS}, f"{where} {i}") for i, row in enumerate(data)]

    def load(self, split: str, language: str, tokenizer: Any = None):
        """Dataset with per-choice ``input_ids``/``attention_mask``/(``token_type_ids``) lists and ``labels``."""
        from datasets import Dataset

        if tokenizer is None:
            raise ValueError(f"{self.name}: load needs the model's tokenizer")
        rows = self.examples(split, language)
        firsts = [f"{r['premise']} {PROMPTS[r['question']]}" for r in rows for _ in range(2)]
        seconds = [r[choice] for r in rows for choice in ("choice1", "choice2")]
        enc = tokenizer(firsts, seconds, truncation=True, max_length=self.max_length)
        columns = {key: [enc[key][i:i + 2] for i in range(0, len(firsts), 2)] for key in enc.keys()}
        return Dataset.from_dict({**columns, "labels": [r["label"] for r in rows]})
