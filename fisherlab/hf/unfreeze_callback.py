"""UnfreezeCallback: scheduled unfreezing inside ``transformers.Trainer`` / ``adapters.AdapterTrainer``.

How it fits the Trainer (transformers 4.57, ``Trainer._inner_training_loop``):

1. ``on_init_end`` (end of ``Trainer.__init__``): resolve the BlockMap, validate the
   strategy (bad strings, a permutation that does not fit, an unknown adapter fail
   here, before training) and make every schedulable parameter (layer blocks + head)
   ``requires_grad=True``. The optimizer is created later in ``train()`` from the
   parameters that require grad, so all of them get a parameter group with the
   Trainer's own weight-decay grouping, and the LR scheduler is built after that.
   Under DDP the model is wrapped after the optimizer, so DDP registers its
   gradient hooks on every schedulable parameter too.
2. ``on_train_begin`` (after optimizer creation, DDP wrapping and checkpoint
   loading): check that the optimizer holds every schedulable parameter, restore
   the schedule state when resuming, freeze what is frozen (``requires_grad=False``,
   ``grad=None``: AdamW skips parameters whose grad is None, so frozen blocks are
   neither moved nor decayed) and take the decision of the current step.
3. ``on_step_end`` (global_step just became ``i``): take the decision of step ``i``;
   this is the start of step ``i``, before its forward, and before a checkpoint at
   step ``i`` is written, so a checkpoint holds its own step's decision and resuming
   continues the identical schedule without duplicate rows in the run store.

The schedule state lives in ``TrainerState.stateful_callbacks["fisherlab.unfreeze"]``,
which the Trainer writes to ``trainer_state.json`` in every checkpoint and reads back
on ``train(resume_from_checkpoint=...)``. The callback needs binding to its Trainer
(:mod:`fisherlab.hf.binding`) and is a :class:`~fisherlab.hf.binding.ScheduleSettler`: a
:class:`~fisherlab.hf.FisherProbeCallback` calls :meth:`UnfreezeCallback.settle` before it
measures, whatever the order of the callbacks.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from fisherlab.blocks import BlockMap
from fisherlab.hf.binding import _STATE_PREFIX, TrainerBoundCallback
from fisherlab.hf.precision import record_precision
from fisherlab.hf.probe_callback import attach_training_data
from fisherlab.unfreezing.schedule import UnfreezeEvent, UnfreezeSchedule
from fisherlab.unfreezing.strategies import Strategy, StrategyError, strategy_from_string


class UnfreezeCallback(TrainerBoundCallback):
    """Scheduled unfreezing (Algorithm 1) as a Trainer callback.

    Args:
        strategy: a Strategy or its string/dict (``"gradual:k=800"``, ``"fisher:k=50"``, ...).
        blocks: a BlockMap, or the task adapter's name (the BlockMap is discovered).
        writer: a run-store writer; each unfreezing event goes to ``writer.log_schedule``
            (main process only).
        state_key: key of the state in ``TrainerState.stateful_callbacks``.
    """

    def __init__(self, strategy: Strategy | str | dict, blocks: BlockMap | str, writer: Any = None,
                 state_key: str = "unfreeze") -> None:
        self.strategy = strategy_from_string(strategy)
        if not isinstance(blocks, (BlockMap, str)):
            raise StrategyError(f"UnfreezeCallback: blocks must be a BlockMap or the task adapter's name, "
                                f"got {type(blocks).__name__}")
        if isinstance(blocks, BlockMap):
            self.strategy.validate(blocks)
        self.blocks: BlockMap | str = blocks
        self.writer = writer
        self.state_key = _STATE_PREFIX + state_key
        self.schedule: UnfreezeSchedule | None = None
        self._active_state: Any = None  # the TrainerState of the train() call in progress

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module) -> UnfreezeSchedule:
        """Resolve blocks, validate, and (before training) make every schedulable parameter trainable
        so the optimizer and DDP register it. Idempotent; called by ``on_init_end`` and the mixin."""
        if self.schedule is None:
            self.blocks = self._resolve_blocks(self.blocks, model, "UnfreezeCallback")
            self.schedule = UnfreezeSchedule(self.strategy, self.blocks, measure=self._measure_fn(),
                                             measure_languages=self._measure_languages_fn())
        self.schedule.check_model(model)
        for param in self.schedule.schedulable_parameters(model).values():
            param.requires_grad_(True)
        return self.schedule

    def _measure_fn(self):
        if not self.strategy.needs_measurement:
            return None
        probe = self.strategy.make_probe()

        def measure(model: torch.nn.Module, names: Sequence[str], step: int) -> dict[str, float]:
            # measure the probe's own block set when it covers ``names``: a FisherProbeCallback
            # sharing this probe then reuses the measurement of the same step
            default = probe.block_names or self.blocks.names
            result = probe.measure(model, self.blocks, step, default if set(names) <= set(default) else names)
            return {n: result.traces[n] for n in names}

        return measure

    def _measure_languages_fn(self):
        """Target-language traces from the probe's language sets (``fisher:data=target``)."""
        if not self.strategy.needs_measurement:
            return None
        probe = self.strategy.make_probe()

        def measure(model: torch.nn.Module, languages: Sequence[str], names: Sequence[str],
                    step: int) -> dict[str, dict[str, float]]:
            missing = [lang for lang in languages if lang not in probe.language_sets]
            if missing:
                raise StrategyError(f"{self.strategy.name}: the probe has no input set for {missing} "
                                    f"(sets: {probe.languages}); add them with probe.add_language")
            return {lang: dict(probe.measure_language(model, self.blocks, step, lang, names).traces)
                    for lang in languages}

        return measure

    @property
    def probe(self) -> Any:
        """The strategy's FisherProbe (``fisher`` strategy), else None."""
        return self.strategy.make_probe() if self.strategy.needs_measurement else None

    def _check_optimizer(self, model: torch.nn.Module, optimizer: Any) -> None:
        if optimizer is None:
            return
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = sorted({self.blocks.block_of(n) for n, p in self.schedule.schedulable_parameters(model).items()
                          if id(p) not in held}, key=str)
        if missing:
            raise StrategyError(
                f"UnfreezeCallback: parameters of blocks {missing} are not in the optimizer (they did not "
                "require grad when it was created, and an optimizer/LR scheduler cannot grow safely during "
                "training). Pass the callback in Trainer(callbacks=[...]) (it makes them trainable at init), "
                "use fisherlab.make_trainer_class(Trainer), or build the optimizer with "
                "fisherlab.unfreezing.schedulable_param_groups(...)."
            )

    def _check_ddp(self, args: Any) -> None:
        if args is None or getattr(args, "world_size", 1) <= 1 or self.strategy.name == "standard":
            return
        trainer = self.trainer  # bound by on_train_begin; None only when called on its own
        wrapped = getattr(trainer, "model_wrapped", None) if trainer is not None else None
        find_unused = getattr(wrapped, "find_unused_parameters", None)
        if find_unused is None:  # not wrapped by DDP (or unknown): infer from the arguments
            find_unused = args.ddp_find_unused_parameters
            if find_unused is None:
                find_unused = not bool(getattr(args, "gradient_checkpointing", False))
        if not find_unused:
            raise StrategyError(
                "UnfreezeCallback: under DDP, frozen blocks produce no gradients, which DDP only tolerates "
                "with find_unused_parameters=True; set TrainingArguments(ddp_find_unused_parameters=True) "
                "(the Trainer turns it off by default when gradient checkpointing is on)"
            )

    # -- events ------------------------------------------------------------------------------
    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.prepare(model)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        self.require_trainer()
        if self._active_state is not state:  # (a probe callback may have settled us already)
            self._active_state = None
            self._begin(args, state, model, optimizer, train_dataloader)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.settle(state, model)

    # -- work ----------------------------------------------------------------------------------
    def _begin(self, args: Any, state: Any, model: torch.nn.Module, optimizer: Any,
               train_dataloader: Any) -> None:
        schedule = self.prepare(model)
        if self.writer is not None and state.is_world_process_zero:  # run.json says what trained the run
            from fisherlab.runs.components import record_component

            record_component(self.writer, "unfreeze", {"strategy": self.strategy.to_string(),
                                                       "blocks": list(self.blocks.names)},
                             strategy=self.strategy.to_string(), estimator=getattr(self.strategy, "estimator", None))
        if self.strategy.needs_measurement:
            attach_training_data(self.probe, train_dataloader, args, "UnfreezeCallback (fisher strategy)")
        self._check_optimizer(model, optimizer)
        self._check_ddp(args)
        record_precision(self.writer, self.trainer, model, state)
        if state.global_step == 0:  # say so when the schedule cannot complete in the step budget
            from fisherlab.spec.budget import schedule_shortfall

            shortfall = schedule_shortfall(self.strategy, self.blocks.n_layers, state.max_steps)
            if shortfall:
                warnings.warn(f"UnfreezeCallback: {shortfall}", UserWarning, stacklevel=2)
        saved = state.stateful_callbacks.get(self.state_key)
        if saved:
            schedule.load_state_dict(saved)
        elif state.global_step > 0:
            raise StrategyError(
                f"UnfreezeCallback: resuming at step {state.global_step} but the checkpoint has no unfreezing "
                f"state (key {self.state_key!r} in trainer_state.json); was it written without this callback?"
            )
        else:
            schedule.unfrozen, schedule.events, schedule.decided_through = [], [], -1
        self._active_state = state
        schedule.check_model(model)
        schedule.apply(model)
        self._decide(state, model)

    def settle(self, state: Any, model: torch.nn.Module | None = None) -> None:
        """Take the decision for ``state.global_step`` if not taken yet (idempotent; the
        :class:`~fisherlab.hf.binding.ScheduleSettler` hand-off)."""
        trainer = self.require_trainer()
        if model is None:
            model = trainer.model
        if self._active_state is not state:
            self._active_state = None
            self._begin(trainer.args, state, model, trainer.optimizer, trainer.callback_handler.train_dataloader)
            return
        self._decide(state, model)

    def _decide(self, state: Any, model: torch.nn.Module) -> None:
        step = int(state.global_step)
        if state.max_steps and step >= state.max_steps:  # no step follows: nothing to decide
            self._save_state(state)
            return
        schedule = self.schedule
        deciding = step > schedule.decided_through and schedule.strategy.is_decision_step(step, schedule.blocks.n_layers)
        event = schedule.advance(model, step)
        if deciding:
            self._check_ranks_agree(step, event)
        self._save_state(state)
        if event is not None:
            self._record(event, state)

    def _check_ranks_agree(self, step: int, event: UnfreezeEvent | None) -> None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        if world <= 1:
            return
        mine = list(event.blocks) if event is not None else []
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        if any(g != mine for g in gathered):
            raise RuntimeError(f"UnfreezeCallback: ranks disagree on the blocks to unfreeze at step {step}: "
                               f"{gathered}")

    def _save_state(self, state: Any) -> None:
        state.stateful_callbacks[self.state_key] = self.schedule.state_dict()

    def _record(self, event: UnfreezeEvent, state: Any) -> None:
        if self.writer is not None and state.is_world_process_zero:
            self.writer.log_schedule(event.step, list(event.blocks), self.strategy.to_string(),
                                     scores=event.scores)
        logs: dict[str, float] = {"unfreeze/n_unfrozen": float(len(self.schedule.unfrozen))}
        if len(event.blocks) == 1 and self.blocks[event.blocks[0]].layer is not None:
            logs["unfreeze/layer"] = float(self.blocks[event.blocks[0]].layer)
        self._log(logs)
