"""The Task protocol: what the runner needs to know about a task, nothing about how it trains.

A task knows its name, head kind, number of labels, languages (and which one is
the source), how to load a split of a language as a tokenized ``datasets.Dataset``
(columns ready for a ``DataCollatorWithPadding``), and its metric.
``ClassificationTask`` adds batched prediction and evaluation for
sequence-classification heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

HEAD_KINDS = ("classification", "multiple_choice", "qa", "tagging")
SPLITS = ("train", "validation", "test")


@runtime_checkable
class Task(Protocol):
    """What every registered task provides."""

    name: str
    head: str
    num_labels: int
    languages: tuple[str, ...]
    source_language: str
    metric: str

    def load(self, split: str, language: str, tokenizer: Any = None) -> Any:
        """The tokenized ``split`` of ``language`` (a ``datasets.Dataset`` with a label column)."""
        ...

    def compute_metrics(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        """``{metric: value}`` (percent) for predictions against references."""
        ...

    def model_defaults(self) -> dict[str, Any]:
        """Keyword arguments for ``build_madx`` that this task brings (base, adapters, ...); may be empty."""
        ...


def pad_features(rows: dict[str, list], columns: Sequence[str], tokenizer: Any, device: Any = None) -> dict[str, Any]:
    """Pad a slice of a tokenized dataset into tensors (on ``device`` when given); multiple-choice
    rows (a list per choice) become (B, C, L)."""
    size = len(rows[columns[0]])
    nested = size > 0 and isinstance(rows[columns[0]][0][0], list)
    if not nested:
        batch = dict(tokenizer.pad([{c: rows[c][i] for c in columns} for i in range(size)], return_tensors="pt"))
    else:
        choices = len(rows[columns[0]][0])
        flat = [{c: rows[c][i][k] for c in columns} for i in range(size) for k in range(choices)]
        batch = {key: value.view(size, choices, -1)
                 for key, value in tokenizer.pad(flat, return_tensors="pt").items()}
    return batch if device is None else {key: value.to(device) for key, value in batch.items()}


class ClassificationTask:
    """Shared behaviour of classification and multiple-choice tasks (accuracy, batched evaluation)."""

    name: str = ""
    head: str = "classification"
    num_labels: int = 2
    languages: tuple[str, ...] = ()
    source_language: str = "en"
    metric: str = "accuracy"

    def check_split(self, split: str, language: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"{self.name}: split {split!r} unknown; expected one of {SPLITS}")
        if language not in self.languages:
            raise ValueError(f"{self.name}: language {language!r} unknown; this task has {list(self.languages)}")

    def compute_metrics(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        from fisherlab.tasks.metrics import accuracy

        return {"accuracy": accuracy(predictions, references)}

    def model_defaults(self) -> dict[str, Any]:
        return {}

    def trainer_compute_metrics(self, eval_dataset: Any = None):
        """The Trainer's ``compute_metrics``: accuracy of the argmax predictions."""
        from fisherlab.tasks.training import argmax_metrics

        return argmax_metrics(self)

    def predict(self, model: Any, dataset: Any, tokenizer: Any, batch_size: int = 256) -> list[int]:
        """Argmax predictions of ``model`` on ``dataset`` (no gradients; mode restored afterwards)."""
        import torch

        from fisherlab.torch_utils import model_device

        columns = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in dataset.column_names]
        was_training = model.training
        device = model_device(model)
        model.eval()
        predictions: list[int] = []
        try:
            with torch.no_grad():
                for start in range(0, len(dataset), batch_size):
                    rows = dataset[start:start + batch_size]
                    logits = model(**pad_features(rows, columns, tokenizer, device)).logits
                    predictions += logits.argmax(-1).tolist()
        finally:
            model.train(was_training)
        return predictions

    def evaluate(self, model: Any, dataset: Any, tokenizer: Any, batch_size: int = 256) -> dict[str, float]:
        """``compute_metrics`` of ``predict`` against the dataset's ``labels``."""
        return self.compute_metrics(self.predict(model, dataset, tokenizer, batch_size), list(dataset["labels"]))
