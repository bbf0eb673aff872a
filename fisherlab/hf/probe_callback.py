"""FisherProbeCallback: when to measure tr(F) during ``Trainer.train`` (what: :class:`FisherProbe`).

Every ``every`` optimizer steps (and at step 0 and at the end), it logs ``fisher/<block>``
and ``fisher/mean_trainable`` through ``Trainer.log`` (so ``report_to`` backends get them)
and appends rows to the run store (``writer.log_fisher``). Measurements at step ``i`` see
the weights after ``i`` optimizer steps, before the forward of step ``i``; they are taken in
``on_step_end`` of step ``i-1`` (before a checkpoint at step ``i`` is written, so the
checkpoint and the run store agree on resume). Needs binding (:mod:`fisherlab.hf.binding`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fisherlab.blocks import BlockMap
from fisherlab.fisher.language_sets import LABEL_FREE_ESTIMATORS
from fisherlab.fisher.measurement import FisherMeasurement
from fisherlab.fisher.probe import FisherProbe
from fisherlab.hf.binding import _STATE_PREFIX, TrainerBoundCallback
from fisherlab.hf.precision import record_precision
from fisherlab.spec.curve import curve_mean


def attach_training_data(probe: FisherProbe, train_dataloader: Any, args: Any, who: str) -> None:
    """Point ``probe`` at the trainer's training data, unless the user attached other data.

    Data attached here is re-attached at every ``train()`` (a callback reused with another
    Trainer follows that Trainer's data)."""
    if probe.attached and not probe._from_trainer:
        return
    if train_dataloader is None:
        if probe.attached:
            return
        raise ValueError(f"{who}: no training dataloader to draw probe batches from; "
                         "call probe.attach(dataset, collate_fn, batch_size) first")
    if probe.attached and probe.dataset is getattr(train_dataloader, "dataset", None):
        return  # already on this data (e.g. a probe shared by two callbacks): keep its cache
    probe.attach_dataloader(train_dataloader, batch_size=getattr(args, "per_device_train_batch_size", None))
    probe._from_trainer = True


class FisherProbeCallback(TrainerBoundCallback):
    """Measure tr(F) per block every ``every`` optimizer steps during ``Trainer.train``.

    Measures at step 0, at every multiple of ``every`` and (``at_end``) after the last
    step; logs ``fisher/<block>`` and ``fisher/mean_trainable`` (mean over the measured
    layer blocks that are trainable at that step, head excluded:
    :func:`fisherlab.spec.curve.curve_mean`, the report's curve point) through ``Trainer.log`` and writes
    ``writer.log_fisher(rows, step)`` on the main process. Data: its own sampler over
    the trainer's training dataset and collator (see :class:`FisherProbe`); the
    training data order and every RNG stream are left alone.

    ``blocks`` is a BlockMap, the task adapter's name, or None (the model's active task
    module; the whole layers of a model without adapters); ``probe`` shares a
    :class:`FisherProbe` (e.g. with the ``fisher`` strategy; its settings win).

    ``languages`` (``{language: map-style dataset}``) adds unlabelled target-language input
    sets: at every probe step each is measured on the same fixed seeded subset of
    ``language_examples`` examples (None: ``n_batches`` x the probe batch size, i.e. the
    source probe's size), collated by ``language_collate`` (None: the trainer's collator),
    labels removed. Their rows carry ``language`` in ``fisher.jsonl``; logs are
    ``fisher/<language>/<block>`` and ``fisher/<language>/mean_trainable``. Each set costs
    about one source measurement.
    """

    def __init__(self, every: int = 100, n_batches: int = 40, estimator: str = "per_example",
                 blocks: BlockMap | str | None = None, writer: Any = None, seed: int = 0,
                 batch_size: int | None = None, mode: str = "eval",
                 block_names: Sequence[str] | None = None, at_end: bool = True,
                 probe: FisherProbe | None = None, log_prefix: str = "fisher/",
                 state_key: str = "fisher_probe", languages: Mapping[str, Any] | None = None,
                 language_examples: int | None = None, language_collate: Any = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            raise ValueError(f"FisherProbeCallback: every must be a positive integer, got {every!r}")
        self.every = every
        self.probe = probe or FisherProbe(n_batches=n_batches, estimator=estimator, seed=seed,
                                          batch_size=batch_size, mode=mode, block_names=block_names)
        self.blocks = blocks
        self.writer = writer
        self.at_end = at_end
        self.log_prefix = log_prefix
        self.state_key = _STATE_PREFIX + state_key
        self.measured_through = -1
        self.history: list[FisherMeasurement] = []
        self.languages = dict(languages or {})
        self.language_examples = language_examples
        self.language_collate = language_collate
        self.language_history: dict[str, list[FisherMeasurement]] = {lang: [] for lang in self.languages}
        if self.languages and self.probe.estimator not in LABEL_FREE_ESTIMATORS:
            raise ValueError(f"FisherProbeCallback: estimator {self.probe.estimator!r} needs data labels; "
                             f"target-language sets are unlabelled (use one of {LABEL_FREE_ESTIMATORS})")

    def config(self) -> dict[str, Any]:
        """``run.json``'s ``fisher`` entry: estimator, every, n_batches, ..."""
        out = {"every": self.every, **self.probe.config()}
        if self.languages:
            out["languages"] = list(self.languages)
            out["language_examples"] = self.language_examples
        return out

    # -- events ------------------------------------------------------------------------------
    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.blocks = self._resolve_blocks(self.blocks, model, "FisherProbeCallback", discover=True)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self.require_trainer()
        self.blocks = self._resolve_blocks(self.blocks, model, "FisherProbeCallback", discover=True)
        attach_training_data(self.probe, train_dataloader, args, "FisherProbeCallback")
        record_precision(self.writer, self.trainer, model, state)
        self._add_languages(train_dataloader)
        if self.writer is not None and state.is_world_process_zero:  # run.json says what measured the run
            from fisherlab.runs.components import record_component

            record_component(self.writer, "fisher_probe", self.config(), estimator=self.probe.estimator, fisher=True)
        saved = state.stateful_callbacks.get(self.state_key)
        self.measured_through = int(saved["measured_through"]) if saved else -1
        self._save_state(state)
        if state.global_step % self.every == 0:
            self._measure(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._measure(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.at_end:
            self._measure(args, state, model)

    # -- work ----------------------------------------------------------------------------------
    def _save_state(self, state: Any) -> None:
        state.stateful_callbacks[self.state_key] = {"measured_through": self.measured_through}

    def _add_languages(self, train_dataloader: Any) -> None:
        """Give the probe its target-language sets (once; the fixed subsets never change)."""
        collate = self.language_collate or getattr(train_dataloader, "collate_fn", None)
        size = self.probe.batch_size or self.probe._data_batch_size
        n = self.language_examples if self.language_examples is not None else \
            (self.probe.n_batches * size if size else None)
        for language, dataset in self.languages.items():
            if language not in self.probe.language_sets:
                self.probe.add_language(language, dataset, collate, n)

    def _measure(self, args: Any, state: Any, model: torch.nn.Module) -> FisherMeasurement | None:
        step = int(state.global_step)
        if step <= self.measured_through:
            return None
        self._settle_schedules(state, model)
        result = self.probe.measure(model, self.blocks, step)
        trainable = self.blocks.trainable_blocks(model)
        rows = result.to_records(trainable, with_estimator=True)
        self.history.append(result)
        self.measured_through = step
        self._save_state(state)
        logs = {f"{self.log_prefix}{name}": value for name, value in result.traces.items()}
        names = list(result.traces)
        logs[f"{self.log_prefix}mean_trainable"] = curve_mean(  # the report's curve point (one definition)
            [result.traces[n] for n in names], [n in trainable for n in names],
            [self.blocks[n].layer is not None for n in names])
        for language in self.languages:
            measured = self.probe.measure_language(model, self.blocks, step, language)
            self.language_history[language].append(measured)
            rows += [{**row, "language": language} for row in measured.to_records(trainable, with_estimator=True)]
            logs.update({f"{self.log_prefix}{language}/{name}": v for name, v in measured.traces.items()})
            logs[f"{self.log_prefix}{language}/mean_trainable"] = curve_mean(
                [measured.traces[n] for n in names], [n in trainable for n in names],
                [self.blocks[n].layer is not None for n in names])
        if self.writer is not None and state.is_world_process_zero:
            self.writer.log_fisher(rows, step)
        self._log(logs)
        return result


__all__ = ["FisherProbeCallback", "attach_training_data"]
