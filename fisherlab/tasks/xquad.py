"""XQuAD (Artetxe et al., 2020): extractive QA in 11+ languages; trained on English SQuAD v1.1.

Files: ``<data_dir>/xquad/xquad.<lang>.json`` (test), and for the source
``<data_dir>/squad/train-v1.1.json`` / ``dev-v1.1.json`` (SQuAD format).
``load`` produces sliding-window features (question + context, ``max_length``
384, stride 128) with ``start_positions``/``end_positions`` (the [CLS] index when
the answer is outside the window); evaluation splits also carry
``example_id``, ``offset_mapping`` (context tokens only, ``[-1, -1]`` elsewhere),
``context`` and ``answers`` so that ``postprocess`` can recover answer strings.
The metric is SQuAD F1 (and exact match).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fisherlab.tasks._data import resolve_data_dir
from fisherlab.tasks.base import SPLITS
from fisherlab.tasks.metrics import squad_exact_match, squad_f1


class XQuADTask:
    """``get_task("xquad", data_dir=...)``; ``max_examples`` keeps the first n questions (smoke runs)."""

    head = "qa"
    num_labels = 2
    metric = "f1"

    def __init__(self, data_dir: str | Path | None = None, *, source_language: str = "en", max_length: int = 384,
                 stride: int = 128, max_answer_length: int = 30, n_best: int = 20, max_examples: int | None = None,
                 name: str = "xquad") -> None:
        self.name = name
        self.max_examples = max_examples
        self.root = resolve_data_dir(data_dir, name, "xquad")
        self.squad_root = self.root.parent / "squad"
        self.source_language = source_language
        self.max_length, self.stride = max_length, stride
        self.max_answer_length, self.n_best = max_answer_length, n_best
        found = sorted(p.name.split(".")[1] for p in self.root.glob("xquad.*.json"))
        if not found:
            raise ValueError(f"{name}: no xquad.<lang>.json files under {self.root}")
        self.languages = tuple(dict.fromkeys([source_language, *found]))

    def model_defaults(self) -> dict[str, Any]:
        return {}

    def path(self, split: str, language: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"{self.name}: split {split!r} unknown; expected one of {SPLITS}")
        if language not in self.languages:
            raise ValueError(f"{self.name}: language {language!r} unknown; this task has {list(self.languages)}")
        if split == "test":
            return self.root / f"xquad.{language}.json"
        if language != self.source_language:
            raise ValueError(f"{self.name}: no {split} split for {language!r} (XQuAD is test-only; "
                             f"train/validation are SQuAD in {self.source_language!r})")
        return self.squad_root / ("train-v1.1.json" if split == "train" else "dev-v1.1.json")

    def examples(self, split: str, language: str) -> list[dict[str, Any]]:
        """Flat SQuAD examples: ``id``, ``question``, ``context``, ``answers`` (texts), ``answer_starts``."""
        path = self.path(split, language)
        if not path.is_file():
            raise ValueError(f"{self.name}: {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))["data"]
            rows = []
            for article in data:
                for paragraph in article["paragraphs"]:
                    for qa in paragraph["qas"]:
                        rows.append({"id": qa["id"], "question": qa["question"], "context": paragraph["context"],
                                     "answers": [a["text"] for a in qa["answers"]],
                                     "answer_starts": [a["answer_start"] for a in qa["answers"]]})
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{self.name}: {path} is not in SQuAD format ({err!r})") from err
        return rows[: self.max_examples] if self.max_examples is not None else rows

    def load(self, split: str, language: str, tokenizer: Any = None):
        """Tokenized windows (see the module docstring); needs a fast tokenizer (offsets)."""
        from datasets import Dataset

        if tokenizer is None or not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{self.name}: load needs the model's fast tokenizer (for offsets)")
        rows = self.examples(split, language)
        enc = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                        max_length=self.max_length, stride=self.stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
        keep = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
        columns: dict[str, list] = {k: enc[k] for k in keep}
        starts, ends, offsets = [], [], []
        for i, mapping in enumerate(enc["offset_mapping"]):
            row = rows[enc["overflow_to_sample_mapping"][i]]
            sequence_ids = enc.sequence_ids(i)
            context = [j for j, s in enumerate(sequence_ids) if s == 1]
            offsets.append([list(m) if sequence_ids[j] == 1 else [-1, -1] for j, m in enumerate(mapping)])
            start_tok = end_tok = 0
            if row["answers"] and context:
                a_start = row["answer_starts"][0]
                a_end = a_start + len(row["answers"][0])
                if mapping[context[0]][0] <= a_start and mapping[context[-1]][1] >= a_end:
                    start_tok = next(j for j in context if mapping[j][1] > a_start)
                    end_tok = next(j for j in reversed(context) if mapping[j][0] < a_end)
            starts.append(start_tok)
            ends.append(end_tok)
        columns.update(start_positions=starts, end_positions=ends)
        if split != "train":
            sample = enc["overflow_to_sample_mapping"]
            columns.update(example_id=[rows[s]["id"] for s in sample], offset_mapping=offsets,
                           context=[rows[s]["context"] for s in sample], answers=[rows[s]["answers"] for s in sample])
        return Dataset.from_dict(columns)

    def postprocess(self, dataset: Any, start_logits: Sequence[Sequence[float]],
                    end_logits: Sequence[Sequence[float]]) -> tuple[list[str], list[list[str]]]:
        """Best span per example (over its windows): predicted strings and gold answers, in example order."""
        best: dict[str, tuple[float, str]] = {}
        golds: dict[str, list[str]] = {}
        for i in range(len(dataset)):
            row = dataset[i]
            ex, offsets, context = row["example_id"], row["offset_mapping"], row["context"]
            golds[ex] = row["answers"]
            s_log, e_log = start_logits[i], end_logits[i]
            valid = [j for j, o in enumerate(offsets) if o[0] >= 0]
            top_s = sorted(valid, key=lambda j: -s_log[j])[: self.n_best]
            top_e = sorted(valid, key=lambda j: -e_log[j])[: self.n_best]
            for s in top_s:
                for e in top_e:
                    if e < s or e - s + 1 > self.max_answer_length:
                        continue
                    score = float(s_log[s]) + float(e_log[e])
                    if ex not in best or score > best[ex][0]:
                        best[ex] = (score, context[offsets[s][0]:offsets[e][1]])
            best.setdefault(ex, (float("-inf"), ""))
        order = list(dict.fromkeys(dataset["example_id"]))
        return [best[ex][1] for ex in order], [golds[ex] for ex in order]

    def compute_metrics(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        return {"f1": squad_f1(predictions, references), "exact_match": squad_exact_match(predictions, references)}

    def evaluate(self, model: Any, dataset: Any, tokenizer: Any, batch_size: int = 64) -> dict[str, float]:
        """Run the QA head over the windows, post-process, and score against the gold answers."""
        import torch

        from fisherlab.tasks.base import pad_features
        from fisherlab.torch_utils import model_device

        columns = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in dataset.column_names]
        starts: list[list[float]] = []
        ends: list[list[float]] = []
        was_training = model.training
        device = model_device(model)
        model.eval()
        try:
            with torch.no_grad():
                for begin in range(0, len(dataset), batch_size):
                    rows = dataset[begin:begin + batch_size]
                    out = model(**pad_features(rows, columns, tokenizer, device))
                    for k, ids in enumerate(rows["input_ids"]):
                        starts.append(out.start_logits[k, :len(ids)].tolist())
                        ends.append(out.end_logits[k, :len(ids)].tolist())
        finally:
            model.train(was_training)
        return self.compute_metrics(*self.postprocess(dataset, starts, ends))
