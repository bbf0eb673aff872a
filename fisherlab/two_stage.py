"""Two-stage fine-tuning (Stickland & Murray, Figure 2): English first, then a target language.

Stage 1 is an ordinary ``fisherlab train`` run on the source language (with the tr(F)
probe, so the run records tr(F) after English training). Stage 2, for each target
language in turn, starts from the stage-1 weights, trains further on the task's ``train``
split in that language and evaluates on its ``validation`` split before and after. With
PAWS-X and ``task_options: {"dev_halves": true}`` these are the two halves of the
language's 2,000 dev examples (1,000 to train, 1,000 to evaluate), the note's protocol;
any task with a target-language train split works (the testbed has one in every language).

The stage-2 parameters are those trainable at the end of stage 1 (MAD-X: the task module
and head, with the target language's adapter swapped in; full fine-tuning: the whole
model). The model is restored to its stage-1 weights before every target. Each target
writes, into the stage-1 run's ``metrics.jsonl`` at the last stage-1 step, one row per
metric with split ``two_stage_gain`` (after minus before; what the report's ``two_stage``
figure reads) plus ``two_stage_before`` and ``two_stage_after``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fisherlab.config import ConfigError, RunConfig, load_task

__all__ = ["GAIN_SPLIT", "run_two_stage", "target_stage"]

GAIN_SPLIT = "two_stage_gain"


def _check_targets(config: RunConfig, targets: Sequence[str]) -> list[str]:
    targets = [str(t).strip() for t in targets if str(t).strip()]
    if not targets:
        raise ConfigError("targets: give at least one target language, e.g. de,es,zh")
    if len(set(targets)) != len(targets):
        raise ConfigError(f"targets: duplicated in {targets}")
    task = load_task(config)
    source = config.task.source_language or task.source_language
    bad = [t for t in targets if t not in task.languages]
    if bad:
        raise ConfigError(f"targets: {bad} are not languages of task {task.name!r} ({list(task.languages)})")
    if source in targets:
        raise ConfigError(f"targets: {source!r} is the source language (stage 1); give the other languages")
    return targets


def _evaluate(prepared: Any, language: str) -> dict[str, float]:
    task = prepared.task
    dataset = task.load("validation", language, prepared.tokenizer)
    if prepared.config.task.max_eval_samples:
        dataset = dataset.select(range(min(prepared.config.task.max_eval_samples, len(dataset))))
    result = task.evaluate(prepared.model, dataset, prepared.tokenizer, batch_size=prepared.config.run.eval_batch_size)
    return {metric: float(value) for metric, value in result.items()}


def target_stage(prepared: Any, language: str, output_dir: Path, *, epochs: float | None = None,
                 max_steps: int | None = None, learning_rate: float | None = None) -> tuple[dict, dict]:
    """Train ``prepared.model`` further on ``language`` (its ``train`` split); returns the
    ``validation`` scores ``(before, after)``. The caller restores the weights."""
    from adapters import AdapterTrainer
    from transformers import Trainer, set_seed

    from fisherlab.tasks.training import data_collator

    config = prepared.config
    before = _evaluate(prepared, language)
    train = prepared.task.load("train", language, prepared.tokenizer)
    changes: dict[str, Any] = {"output_dir": str(output_dir), "save_strategy": "no", "eval_strategy": "no",
                               "report_to": [], "load_best_model_at_end": False}
    if epochs is not None:
        changes["num_train_epochs"] = float(epochs)
    if max_steps is not None:
        changes["max_steps"] = int(max_steps)
    if learning_rate is not None:
        changes["learning_rate"] = float(learning_rate)
    args = dataclasses.replace(config.training, **changes)
    set_seed(config.training.seed)
    trainer_class = Trainer if config.model.task_module == "full" else AdapterTrainer
    trainer = trainer_class(model=prepared.model, args=args, train_dataset=train,
                            data_collator=data_collator(prepared.task, prepared.tokenizer))
    if not config.run.progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.train()
    return before, _evaluate(prepared, language)


def run_two_stage(config: RunConfig, targets: Sequence[str], *, epochs: float | None = None,
                  max_steps: int | None = None, learning_rate: float | None = None) -> Path:
    """Stage 1 (``run_training``) then stage 2 per target language; returns the run directory.

    ``epochs``/``max_steps``/``learning_rate``: stage-2 settings (default: stage 1's).
    Targets are checked (languages of the task, not the source) before anything trains.
    """
    from fisherlab.models import madx_setup, swap_language
    from fisherlab.train import run_training

    targets = _check_targets(config, targets)
    if max_steps is not None and max_steps <= 0:
        raise ConfigError(f"max_steps: stage-2 steps must be positive, got {max_steps}")

    def stage2(prepared: Any, trainer: Any, writer: Any) -> None:
        model = prepared.model
        step = int(trainer.state.global_step)
        weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        flags = {name: p.requires_grad for name, p in model.named_parameters()}
        languages = madx_setup(model).languages
        try:
            for language in targets:
                if languages:
                    swap_language(model, language)
                before, after = target_stage(prepared, language, Path(writer.path) / "two_stage" / language,
                                             epochs=epochs, max_steps=max_steps, learning_rate=learning_rate)
                for metric, value in after.items():
                    writer.log_metric(step, "two_stage_before", language, metric, before[metric])
                    writer.log_metric(step, "two_stage_after", language, metric, value)
                    writer.log_metric(step, GAIN_SPLIT, language, metric, value - before[metric])
                model.load_state_dict(weights)
                for name, p in model.named_parameters():
                    p.requires_grad_(flags[name])
        finally:
            if languages:
                swap_language(model, prepared.source_language)

    return run_training(config, after_training=stage2)
