"""The regularised loss inside a ``transformers.Trainer``: :class:`RegularisedTrainerMixin`.

The mixin overrides ``compute_loss`` with :func:`fisherlab.regularisers.regularised_loss`;
each term's value and the task loss are averaged over the logging interval, added to the
Trainer's ``log`` as ``reg/<name>`` and ``task_loss``, and written to the run's
``metrics.jsonl`` through an optional ``writer`` (``log_metric(step, split, language,
metric, value)``). Under gradient accumulation the total is divided by the accumulation
steps (the mixin turns off the ``num_items_in_batch`` loss path), so terms and task loss
are weighted alike. Logged values are per-rank (not all-reduced) under DDP.
:class:`KeepText` keeps the raw-text fields (``words``) a ``Resegment`` view needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from fisherlab.regularisers.loss import Term, regularised_loss
from fisherlab.regularisers.strings import regularisers_from_strings
from fisherlab.torch_utils import TEXT_KEYS


class KeepText:
    """Wrap a collator so the raw-text fields (``words``, ``word_ids``) pass through as
    per-example lists while the wrapped collator pads and tensorises the rest."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        kept = {key: [f[key] for f in features] for key in TEXT_KEYS if features and key in features[0]}
        batch = self.collator([{k: v for k, v in f.items() if k not in TEXT_KEYS} for f in features])
        batch.update(kept)
        return batch


class RegularisedTrainerMixin:
    """Adds ``regularisers`` (terms or strings) to a ``transformers.Trainer`` subclass.

    ``TrainerClass = fisherlab.make_trainer_class(Trainer)`` then
    ``TrainerClass(model, args, ..., regularisers=["l2:weight=0.01"], writer=run_writer)``.
    The batches may carry ``words`` (for ``Resegment``): they are kept as a dataset column
    (wrap the collator in :class:`KeepText`) and never passed to the model.
    """

    def __init__(self, *args: Any, regularisers: str | Iterable[str | Term] | None = None,
                 writer: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tokenizer = getattr(self, "processing_class", None)
        self.regularisers: list[Term] = regularisers_from_strings(regularisers, tokenizer=tokenizer)
        self.regulariser_writer = writer
        if self.regularisers:
            # The Trainer then divides the returned total by the accumulation steps, so task loss
            # and terms (both per-micro-batch means) are scaled alike. (With num_items_in_batch
            # the task loss alone would be normalised across micro-batches -- or not at all by
            # models that ignore it, such as adapters' heads.)
            self.model_accepts_loss_kwargs = False
        self._reg_sums: dict[str, float] = {}
        self._reg_count = 0

    # raw-text columns survive the Trainer's column removal and never reach the model
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None:
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *TEXT_KEYS]))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = {k: v for k, v in inputs.items() if k not in TEXT_KEYS}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.regularisers or not model.training:
            inputs = {k: v for k, v in inputs.items() if k not in TEXT_KEYS}
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        parent = super()

        def forward(m: torch.nn.Module, b: dict[str, Any]) -> tuple[Tensor, Any]:
            return parent.compute_loss(m, b, return_outputs=True, num_items_in_batch=num_items_in_batch)

        total, parts, outputs = regularised_loss(model, inputs, self.regularisers, step=self.state.global_step,
                                                 forward=forward)
        for name, value in parts.items():
            key = name if name == "task_loss" else f"reg/{name}"
            self._reg_sums[key] = self._reg_sums.get(key, 0.0) + float(value.detach())
        self._reg_count += 1
        return (total, outputs) if return_outputs else total

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._reg_count:
            averages = {k: v / self._reg_count for k, v in self._reg_sums.items()}
            logs.update(averages)
            self._reg_sums, self._reg_count = {}, 0
            if self.regulariser_writer is not None and self.is_world_process_zero():
                for key, value in averages.items():
                    self.regulariser_writer.log_metric(self.state.global_step, "train", None, key, value)
        super().log(logs, *args, **kwargs)


__all__ = ["KeepText", "RegularisedTrainerMixin"]
