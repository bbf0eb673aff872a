"""XQuAD (Artetxe et al., 2020): extractive QA in 12 languages; trained on English SQuAD v1.1.

Files: ``<data_dir>/xquad/xquad.<lang>.json`` (test; 1,190 questions each), and for
the source ``<data_dir>/squad/train-v1.1.json`` / ``dev-v1.1.json`` (SQuAD v1.1:
87,599 / 10,570 questions). Hub: ``google/xquad`` (config ``xquad.<lang>``, its
only split ``validation`` is the test set) and ``rajpurkar/squad``. Windows and
decoding: ``fisherlab.tasks.qa``. Metric: the SQuAD v1.1 script's F1 and exact
match (as the XQuAD paper).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fisherlab.tasks._data import TaskDataError
from fisherlab.tasks.hub import load_hub_split
from fisherlab.tasks.qa import QATask, hub_squad_rows, read_squad

LANGUAGES = ("en", "ar", "de", "el", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
XQUAD_RELEASE = "XQuAD (https://github.com/deepmind/xquad)"
SQUAD_RELEASE = "SQuAD v1.1 (https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json, dev-v1.1.json)"


def squad_path(root: Path, split: str) -> Path:
    """SQuAD v1.1's train or dev file under the data root (``squad/``)."""
    return root / "squad" / ("train-v1.1.json" if split == "train" else "dev-v1.1.json")


class XQuADTask(QATask):
    """``get_task("xquad", data_dir=...)`` or ``get_task("xquad")`` (hub).

    With files, the languages are the ``xquad.<lang>.json`` files found (plus the
    source); ``max_examples`` keeps the first n questions (smoke runs).
    """

    def __init__(self, data_dir: str | Path | None = None, *, source: str | None = None,
                 revisions: dict[str, str] | None = None, source_language: str = "en", max_length: int = 384,
                 stride: int = 128, max_answer_length: int = 30, n_best: int = 20, max_examples: int | None = None,
                 name: str = "xquad") -> None:
        self.name = name
        self.configure(data_dir, source, revisions, max_length, stride, max_answer_length, n_best, max_examples)
        self.source_language = source_language
        self.languages = LANGUAGES
        if self.data is not None:
            self.squad_root = self.data
            self.root = self.data / "xquad" if (self.data / "xquad").is_dir() else self.data
            found = sorted(p.name.split(".")[1] for p in self.root.glob("xquad.*.json"))
            if not found:
                raise TaskDataError(f"{name}: no xquad.<lang>.json files under {self.root} (from {XQUAD_RELEASE})")
            self.languages = tuple(dict.fromkeys([source_language, *found]))

    def _squad_split(self, split: str, language: str) -> None:
        if split != "test" and language != self.source_language:
            raise TaskDataError(f"{self.name}: no {split} split for {language!r} (XQuAD is test-only; "
                                f"train/validation are SQuAD in {self.source_language!r})")

    def path(self, split: str, language: str) -> Path:
        """The release file of ``split`` in ``language`` (files source)."""
        self.check_split(split, language)
        if split == "test":
            return self.root / f"xquad.{language}.json"
        self._squad_split(split, language)
        return squad_path(self.squad_root, split)

    def read_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        self._squad_split(split, language)
        if self.source == "files":
            return read_squad(self.path(split, language), self.name,
                              XQUAD_RELEASE if split == "test" else SQUAD_RELEASE)
        if split == "test":
            return hub_squad_rows(load_hub_split("xquad", "validation", language, self.name, self.revisions))
        return hub_squad_rows(load_hub_split("squad", split, None, self.name, self.revisions))
