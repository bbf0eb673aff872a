"""What the training runner asks of a task, in one place (so the runner calls one function each).

* :func:`subset` — a seeded random subset of a training set (``max_train_samples``):
  SQuAD is ordered by article and MNLI by genre blocks, so the first n would be biased;
  QA windows are sampled by question (all windows of a chosen question are kept).
* :func:`trainer_metrics` — the ``compute_metrics`` the ``transformers.Trainer`` gets:
  argmax accuracy for classification / multiple choice, F1 and exact match for QA
  (decoded over the evaluation windows), None for a task without a metric.
* :func:`data_collator` — batches for the Trainer: padding of flat features, and of
  multiple-choice features (one sequence per choice, padded to (B, C, L)).
* :func:`write_task_results` — ``results.json`` (the task's metric per language, plus
  every metric under ``per_metric``) and one ``test`` row per language and metric in
  ``metrics.jsonl``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any


def subset(dataset: Any, n: int | None, seed: int) -> Any:
    """``n`` examples of ``dataset`` drawn at random with ``seed``, in their original order.

    With an ``example_id`` column (QA windows) ``n`` counts questions and every window of
    a drawn question is kept. ``n`` None, or not smaller than the number of examples:
    the dataset unchanged.
    """
    if n is None:
        return dataset
    if n <= 0:
        raise ValueError(f"subset: n must be positive, got {n}")
    if "example_id" in dataset.column_names:
        ids = list(dataset["example_id"])
        unique = list(dict.fromkeys(ids))
        if n >= len(unique):
            return dataset
        chosen = set(random.Random(seed).sample(unique, n))
        return dataset.select([i for i, example in enumerate(ids) if example in chosen])
    if n >= len(dataset):
        return dataset
    return dataset.select(sorted(random.Random(seed).sample(range(len(dataset)), n)))


def argmax_metrics(task: Any) -> Callable[[Any], dict[str, float]]:
    """``compute_metrics`` for a classification / multiple-choice task: ``task.compute_metrics``
    of the argmax predictions against the label ids."""
    import numpy as np

    def compute(eval_pred: Any) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        return task.compute_metrics(np.asarray(logits).argmax(-1).tolist(), np.asarray(eval_pred.label_ids).tolist())

    return compute


def trainer_metrics(task: Any, eval_dataset: Any) -> Callable[[Any], dict[str, float]] | None:
    """The Trainer's ``compute_metrics`` for ``task`` on ``eval_dataset`` (see the module docstring)."""
    make = getattr(task, "trainer_compute_metrics", None)
    if make is not None:
        return make(eval_dataset)
    if getattr(task, "head", "classification") in ("classification", "multiple_choice"):
        return argmax_metrics(task)
    return None


class MultipleChoiceCollator:
    """Pads multiple-choice features (``input_ids`` etc. a list per choice) to (B, C, L) tensors;
    ``labels`` (B,) are kept as a tensor."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from fisherlab.tasks.base import pad_features

        columns = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in features[0]]
        batch = pad_features({c: [f[c] for f in features] for c in columns}, columns, self.tokenizer)
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([int(f["labels"]) for f in features])
        return batch


def data_collator(task: Any, tokenizer: Any) -> Any:
    """The Trainer's collator for ``task``: ``MultipleChoiceCollator`` for multiple choice, else
    ``transformers.DataCollatorWithPadding``."""
    if getattr(task, "head", None) == "multiple_choice":
        return MultipleChoiceCollator(tokenizer)
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def write_task_results(writer: Any, task: Any, source_language: str,
                       scores: Mapping[str, Mapping[str, float]], step: int) -> None:
    """Write ``scores`` (language -> {metric: value}) to ``results.json`` and ``metrics.jsonl``.

    ``per_language`` holds ``task.metric`` (the headline number: accuracy, or F1 for QA);
    ``per_metric`` holds every metric (``{"f1": {lang: v}, "exact_match": {lang: v}}``).
    """
    from fisherlab.runs.results import write_scores

    for language, values in scores.items():
        if task.metric not in values:
            raise ValueError(f"{task.name}: evaluation of {language!r} lacks the task metric {task.metric!r} "
                             f"(got {sorted(values)})")
    write_scores(writer, scores, task.metric, source_language, step)
