"""FisherlabRun: a complete run from your own Trainer script, in three added lines.

::

    run = FisherlabRun("runs/fun-0", strategy="fisher:k=50", probe_every=100, task="xnli")   # 1
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val)          # yours
    run.attach(trainer)                                                                       # 2
    trainer.train()                                                                           # yours
    run.finish(trainer, results=task.evaluate(model, test, tokenizer))                        # 3

``attach`` works with a plain ``transformers.Trainer`` and ``adapters.AdapterTrainer``
alike (no :func:`~fisherlab.hf.make_trainer_class` needed). It

* finds the task module (the model's active adapter, or ``adapter=``) and its
  :class:`~fisherlab.blocks.BlockMap`;
* creates the run directory (``RunWriter.create``) with ``run.json["labels"]``: method
  (``method=`` or the strategy's name), the canonical strategy string, seed
  (``TrainingArguments.seed``), model, task, task module, regulariser ``none``, estimator;
  ``run.json["config"]`` holds these settings and the ``TrainingArguments``;
* adds and binds the callbacks: :class:`~fisherlab.hf.UnfreezeCallback` (``strategy``),
  :class:`~fisherlab.hf.FisherProbeCallback` (``probe_every > 0``) and
  :class:`~fisherlab.hf.ValidationMetricsCallback`; makes every schedulable parameter
  trainable before the Trainer creates its optimizer (so ``attach`` must come before
  ``train()``);
* sets ``label_names`` of an ``adapters`` model whose forward hides its label arguments
  (``["labels"]``, or the start/end positions of a QA head) and logs a note -- without it
  the Trainer drops the labels and fails with "The model did not return a loss".

``finish(trainer, results=...)`` writes ``results.json`` (any shape of
:func:`fisherlab.runs.results.scores_by_language`) and marks the run ``completed``;
``with run:`` marks it ``failed`` (with the error) when the block raises.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fisherlab.blocks import BlockMap
from fisherlab.errors import FisherlabError
from fisherlab.torch_utils import unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["FisherlabRun", "FisherlabRunError"]


class FisherlabRunError(FisherlabError, RuntimeError):
    """A FisherlabRun was used out of order (finish before attach, attach after train)."""


def _task_module_label(model: Any, blocks: BlockMap) -> str:
    """``full``, ``lora``, or the bottleneck config's name (``SeqBnConfig`` -> ``seq_bn``)."""
    if blocks.mode in ("full", "lora"):
        return blocks.mode
    config = getattr(unwrap_model(model), "adapters_config", None)
    found = config.get(blocks.task_name) if config is not None and blocks.task_name else None
    name = type(found).__name__.removesuffix("Config") if found is not None else ""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() or blocks.mode


def _label_names(model: Any) -> list[str] | None:
    """The label keys of an ``adapters`` model's active head (None for other models)."""
    bare = unwrap_model(model)
    heads = getattr(bare, "heads", None)
    if heads is None or not hasattr(bare, "adapters_config"):
        return None
    head = getattr(bare, "active_head", None)
    head = head[0] if isinstance(head, list) and head else head
    kind = (getattr(heads[head], "config", {}) or {}).get("head_type") if head in heads else None
    return ["start_positions", "end_positions"] if kind == "question_answering" else ["labels"]


class FisherlabRun:
    """One run directory fed by your own Trainer (see the module docstring).

    Args:
        run_dir: the run's directory (created; a finished run there needs ``overwrite``).
        strategy: unfreezing strategy string (``"standard"``, ``"gradual:k=50"``, ``"fisher:k=50"``).
        probe_every: measure tr(F) every N steps (0: never); ``probe_batches``,
            ``probe_estimator``, ``probe_batch_size`` as for :class:`~fisherlab.hf.FisherProbeCallback`.
        adapter: the task adapter's name (default: the model's active task adapter; a model
            without adapters gets whole-layer blocks; one whose adapters are all inactive is refused).
        method, task, model_name, source_language: labels of the run (defaults: the
            strategy's name, the adapter's name, ``model.config.name_or_path``, ``"en"``...
            see :meth:`attach`).
        config: extra settings stored in ``run.json["config"]``.
    """

    def __init__(self, run_dir: str | Path, *, strategy: str = "standard", probe_every: int = 0,
                 probe_batches: int = 40, probe_estimator: str = "per_example", probe_batch_size: int | None = None,
                 adapter: str | None = None, method: str | None = None, task: str | None = None,
                 model_name: str | None = None, source_language: str | None = None,
                 config: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
        from fisherlab.fisher.probe import FisherProbe
        from fisherlab.spec.strategies import strategy_from_string

        self.run_dir = Path(run_dir)
        self.strategy = strategy_from_string(strategy)  # bad strings fail here
        if isinstance(probe_every, bool) or not isinstance(probe_every, int) or probe_every < 0:
            raise ValueError(f"FisherlabRun: probe_every must be an integer >= 0, got {probe_every!r}")
        self.probe_every = probe_every
        self.probe = FisherProbe(n_batches=probe_batches, estimator=probe_estimator,
                                 batch_size=probe_batch_size) if probe_every else None
        self.adapter, self.method, self.task = adapter, method, task
        self.model_name, self.source_language = model_name, source_language
        self.extra_config = dict(config or {})
        self.overwrite = overwrite
        self.writer: Any = None
        self.blocks: BlockMap | None = None
        self.callbacks: list[Any] = []

    # -- attach --------------------------------------------------------------------------------
    def attach(self, trainer: Any) -> FisherlabRun:
        """Create the run directory and add the callbacks to ``trainer`` (before ``train()``)."""
        from fisherlab.fisher.estimators import active_task_module
        from fisherlab.hf.metrics_callback import ValidationMetricsCallback
        from fisherlab.hf.probe_callback import FisherProbeCallback
        from fisherlab.hf.trainer import fix_loss_kwargs
        from fisherlab.hf.unfreeze_callback import UnfreezeCallback
        from fisherlab.runs import RunWriter

        if self.writer is not None:
            raise FisherlabRunError(f"FisherlabRun({str(self.run_dir)!r}) is already attached")
        if getattr(trainer, "optimizer", None) is not None:
            raise FisherlabRunError("FisherlabRun.attach: the Trainer already has an optimizer; attach before "
                                    "trainer.train() so scheduled blocks are in it")
        model = trainer.model
        adapter = self.adapter or active_task_module(model)
        # no active adapter: whole layers of a model without adapters; refused when adapters exist but none is active
        self.blocks = BlockMap.from_model(model, adapter=adapter)
        self.strategy.validate(self.blocks)
        self._fix_label_names(trainer)
        fix_loss_kwargs(trainer)  # adapters heads ignore num_items_in_batch (gradient accumulation)
        if trainer.args.device.type == "cpu" and trainer.args.dataloader_pin_memory:
            trainer.args.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns on CPU
        args = trainer.args
        labels = self.labels(model, args)
        seed = labels["seed"]
        if self.probe is not None:
            self.probe.seed = seed  # the probe's batch draw follows the run's seed
        probe = {"estimator": self.probe.estimator, "every": self.probe_every, "n_batches": self.probe.n_batches,
                 "batch_size": self.probe.batch_size} if self.probe is not None else {}
        training = {k: v for k, v in args.to_dict().items() if not k.startswith("_") and "token" not in k}
        config = {"method": labels["method"], "strategy": labels["strategy"], "seed": seed,
                  "task_name": labels["task"], "model_name": labels["model"], "task_module": labels["task_module"],
                  "source_language": self.source_language, "adapter": adapter, "probe": probe,
                  "training": training, **self.extra_config}
        if trainer.is_world_process_zero():
            self.writer = RunWriter.create(self.run_dir, config=config, fisher=probe, labels=labels,
                                           overwrite=self.overwrite)
        self.callbacks = [UnfreezeCallback(self.strategy, self.blocks, writer=self.writer)]
        if self.probe is not None:
            self.callbacks.append(FisherProbeCallback(every=self.probe_every, probe=self.probe, blocks=self.blocks,
                                                      writer=self.writer, seed=seed))
        if self.writer is not None:
            self.callbacks.append(ValidationMetricsCallback(self.writer, self.source_language))
        for cb in self.callbacks:
            trainer.add_callback(cb)
            if hasattr(cb, "bind"):
                cb.bind(trainer)
        self.callbacks[0].prepare(model)  # on_init_end has passed: make scheduled blocks optimizer-visible
        return self

    def labels(self, model: Any, args: Any) -> dict[str, Any]:
        """``run.json["labels"]`` of this run (``fisherlab.runs.labels.LABEL_FIELDS``)."""
        from fisherlab.spec.methods import method_label

        assert self.blocks is not None
        strategy = self.strategy.to_string()
        estimator = self.probe.estimator if self.probe is not None else getattr(self.strategy, "estimator", None)
        name = self.model_name or getattr(getattr(unwrap_model(model), "config", None), "name_or_path", None)
        return {"version": 1, "method": self.method or method_label(strategy), "strategy": strategy,
                "seed": int(args.seed), "model": name or type(unwrap_model(model)).__name__,
                "task": self.task or self.blocks.task_name, "task_module": _task_module_label(model, self.blocks),
                "regulariser": "none", "regulariser_weight": 0.0, "estimator": estimator}

    def _fix_label_names(self, trainer: Any) -> None:
        if trainer.args.label_names is not None:
            return
        names = _label_names(trainer.model)
        if names is None or list(getattr(trainer, "label_names", []) or []) == names:
            return
        logger.info("FisherlabRun: label_names=%s set on the Trainer (an adapters model's forward takes "
                    "**kwargs, so the Trainer cannot find its label arguments and would drop them)", names)
        trainer.args.label_names = names
        trainer.label_names = names

    # -- finish --------------------------------------------------------------------------------
    def finish(self, trainer: Any = None, results: Mapping[str, Any] | None = None, *, metric: str | None = None,
               language: str | None = None) -> Path:
        """Write ``results`` (``task.evaluate``'s ``{metric: value}`` for ``language``/the source
        language, or ``{language: {metric: value}}``) and mark the run completed; returns the run directory.

        ``metric``: the headline metric (needed when the results hold several). Other ranks: no-op."""
        from fisherlab.runs.results import scores_by_language, write_scores

        if not self.callbacks:
            raise FisherlabRunError("FisherlabRun.finish: attach(trainer) was never called")
        if self.writer is None:
            return self.run_dir
        step = int(trainer.state.global_step) if trainer is not None else 0
        if results is not None:
            source = self.source_language or language
            scores = scores_by_language(results, language=language or self.source_language, metric=metric)
            write_scores(self.writer, scores, metric, source or next(iter(scores)), step)
        self.writer.finish("completed")
        return self.run_dir

    def __enter__(self) -> FisherlabRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.writer is not None and self.writer.status == "running":
            if exc is not None:
                self.writer.finish("failed", error=f"{exc_type.__name__}: {exc}")
            else:
                self.writer.finish("completed")
