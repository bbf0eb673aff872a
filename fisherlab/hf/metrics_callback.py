"""ValidationMetricsCallback: the validation curve (and training loss) of a run into ``metrics.jsonl``.

Every ``Trainer.evaluate`` during training (``eval_strategy="steps"``) calls ``on_evaluate``
with ``eval_<metric>`` values; each becomes one ``metrics.jsonl`` row
``{"step", "split": "validation", "language", "metric", "value"}`` -- the validation curve
the report draws beside tr(F) (FUN Figure 4). Each Trainer log with ``loss``,
``learning_rate`` or ``grad_norm`` becomes a ``split: "train"`` row. Main process only.
Needs no binding: it uses only what the Trainer passes to callbacks.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

#: ``eval_*`` keys that are timings, not metrics.
NOT_METRICS = frozenset({"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_epoch"})
#: Trainer log keys recorded as ``train`` rows.
TRAIN_KEYS = ("loss", "learning_rate", "grad_norm")


class ValidationMetricsCallback(TrainerCallback):
    """Write the Trainer's evaluation metrics (``split``) and training logs (``train``) to ``writer``.

    Args:
        writer: a :class:`fisherlab.runs.RunWriter` (``log_metric``).
        language: the language of the evaluation set (the source language), stored per row.
        split: the split name of evaluation rows (``validation``).
    """

    def __init__(self, writer: Any, language: str | None, split: str = "validation") -> None:
        if writer is None or not hasattr(writer, "log_metric"):
            raise TypeError(f"ValidationMetricsCallback: writer must be a RunWriter, got {writer!r}")
        self.writer = writer
        self.language = language
        self.split = split

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        for key, value in metrics.items():
            if key.startswith("eval_") and key not in NOT_METRICS and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                self.writer.log_metric(state.global_step, self.split, self.language, key[len("eval_"):],
                                       float(value))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        for key in TRAIN_KEYS:
            if key in logs and isinstance(logs[key], (int, float)) and not isinstance(logs[key], bool):
                self.writer.log_metric(state.global_step, "train", self.language, key, float(logs[key]))


__all__ = ["ValidationMetricsCallback"]
