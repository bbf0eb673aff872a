"""Extractive QA shared by XQuAD and MLQA: SQuAD-format examples, sliding windows, span decoding.

``QATask.load`` produces sliding-window features (question + context,
``max_length`` 384, ``stride`` 128 tokens of overlap) with
``start_positions``/``end_positions`` (the [CLS] index 0 when the first gold
answer is not wholly inside the window) and ``example_id`` (every window of one
question shares it; ``fisherlab.tasks.sampling.subset`` samples questions by it).
Evaluation splits also carry ``offset_mapping`` (character spans of context
tokens, ``[-1, -1]`` elsewhere), ``context``, ``answers`` and ``language`` (the
answer language the metric normalises for), so ``postprocess`` recovers strings.
Span decoding: per window the ``n_best`` start and end logits, spans of at most
``max_answer_length`` tokens with end >= start, best start+end logit over all
windows of the question.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fisherlab.tasks._data import TaskDataError, choose_source, require_file
from fisherlab.tasks.base import SPLITS
from fisherlab.tasks.metrics import normalize_answer, qa_scores


def read_squad(path: Path, task: str, release: str) -> list[dict[str, Any]]:
    """Flat examples of a SQuAD-format JSON file: ``id``, ``question``, ``context``, ``answers``
    (texts), ``answer_starts`` (character offsets)."""
    require_file(path, task, release)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        rows = []
        for article in data:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows.append({"id": str(qa["id"]), "question": qa["question"], "context": paragraph["context"],
                                 "answers": [a["text"] for a in qa["answers"]],
                                 "answer_starts": [int(a["answer_start"]) for a in qa["answers"]]})
    except (KeyError, TypeError, ValueError) as err:
        raise TaskDataError(f"{task}: {path} is not in SQuAD format ({err!r})") from err
    return rows


def hub_squad_rows(dataset: Any) -> list[dict[str, Any]]:
    """Flat examples of a hub split in SQuAD's schema (``id``, ``question``, ``context``,
    ``answers`` = ``{"text": [...], "answer_start": [...]}``)."""
    return [{"id": str(row["id"]), "question": row["question"], "context": row["context"],
             "answers": list(row["answers"]["text"]), "answer_starts": [int(s) for s in row["answers"]["answer_start"]]}
            for row in dataset]


class QATask:
    """Windowing, decoding and scoring of extractive QA; subclasses provide ``read_examples``."""

    head = "qa"
    num_labels = 2
    metric = "f1"
    name = ""
    languages: tuple[str, ...] = ()
    source_language = "en"

    def configure(self, data_dir: str | Path | None, source: str | None, revisions: dict[str, str] | None,
                  max_length: int, stride: int, max_answer_length: int, n_best: int,
                  max_examples: int | None) -> None:
        """Source (``fisherlab.tasks._data.choose_source``; ``self.data`` is the data root or None),
        hub revision overrides, window and decoding sizes."""
        self.source, self.data = choose_source(data_dir, source, self.name)
        self.revisions = dict(revisions or {})
        self.max_length, self.stride = max_length, stride
        self.max_answer_length, self.n_best = max_answer_length, n_best
        self.max_examples = max_examples
        self._cache: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def model_defaults(self) -> dict[str, Any]:
        return {}

    def check_split(self, split: str, language: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"{self.name}: split {split!r} unknown; expected one of {SPLITS}")
        if language not in self.languages:
            raise ValueError(f"{self.name}: language {language!r} unknown; this task has {list(self.languages)}")

    def read_examples(self, split: str, language: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def examples(self, split: str, language: str) -> list[dict[str, Any]]:
        """Flat SQuAD examples of ``split`` in ``language`` (cached; the first ``max_examples``)."""
        self.check_split(split, language)
        if (split, language) not in self._cache:
            self._cache[(split, language)] = self.read_examples(split, language)
        rows = self._cache[(split, language)]
        return rows[: self.max_examples] if self.max_examples is not None else rows

    # ---------------------------------------------------------------- metric
    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]],
              language: str | None) -> dict[str, float]:
        """F1 and exact match of the SQuAD v1.1 script (MLQA overrides this per answer language)."""
        return qa_scores(predictions, references, normalize_answer, self.name)

    def compute_metrics(self, predictions: Sequence[str], references: Sequence[Sequence[str]],
                        language: str | None = None) -> dict[str, float]:
        """``{"f1", "exact_match"}`` in percent."""
        return self.score(predictions, references, language)

    # ---------------------------------------------------------------- features
    def load(self, split: str, language: str, tokenizer: Any = None):
        """Tokenized windows (see the module docstring); needs a fast tokenizer (offsets)."""
        from datasets import Dataset

        if tokenizer is None or not getattr(tokenizer, "is_fast", False):
            raise TaskDataError(f"{self.name}: load needs the model's fast tokenizer (for offsets)")
        rows = self.examples(split, language)
        return Dataset.from_dict(window_features(rows, tokenizer, self.max_length, self.stride,
                                                 evaluation=split != "train",
                                                 language=self.metric_language(split, language)))

    def metric_language(self, split: str, language: str) -> str | None:
        """The answer language the metric normalises for on this split (None: SQuAD's normalisation)."""
        return language

    def postprocess(self, dataset: Any, start_logits: Sequence[Sequence[float]],
                    end_logits: Sequence[Sequence[float]]) -> tuple[list[str], list[list[str]]]:
        """Best span per example (over its windows): predicted strings and gold answers, in example order."""
        best: dict[str, tuple[float, str]] = {}
        golds: dict[str, list[str]] = {}
        columns = dataset.select_columns(["example_id", "offset_mapping", "context", "answers"])
        for i, row in enumerate(columns):
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

    def _metric_language(self, dataset: Any) -> str | None:
        if "language" not in dataset.column_names or len(dataset) == 0:
            return None
        return dataset[0]["language"]

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
        return self.compute_metrics(*self.postprocess(dataset, starts, ends), self._metric_language(dataset))

    def trainer_compute_metrics(self, eval_dataset: Any) -> Callable[[Any], dict[str, float]] | None:
        """A ``compute_metrics`` for ``transformers.Trainer`` evaluating ``eval_dataset``: validation F1/EM.

        The Trainer passes ``(start_logits, end_logits)`` for the windows in dataset order
        (padded with -100 past each window; only context positions are decoded).
        """
        if eval_dataset is None:
            return None
        language = self._metric_language(eval_dataset)

        def compute(eval_pred: Any) -> dict[str, float]:
            start_logits, end_logits = eval_pred.predictions[:2]
            return self.compute_metrics(*self.postprocess(eval_dataset, start_logits, end_logits), language)

        return compute


def window_features(rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int, stride: int,
                    evaluation: bool, language: str | None) -> dict[str, list]:
    """Column dict of the sliding windows of ``rows`` (see the module docstring)."""
    enc = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True)
    columns: dict[str, list] = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
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
    sample = enc["overflow_to_sample_mapping"]
    columns.update(start_positions=starts, end_positions=ends, example_id=[rows[s]["id"] for s in sample])
    if evaluation:
        columns.update(offset_mapping=offsets, context=[rows[s]["context"] for s in sample],
                       answers=[rows[s]["answers"] for s in sample], language=[language] * len(sample))
    return columns
