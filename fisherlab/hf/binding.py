"""Binding fisherlab's Trainer callbacks to their ``transformers.Trainer``, explicitly.

A Trainer calls its callbacks with ``(args, state, control, model=..., optimizer=...,
train_dataloader=..., ...)`` but never with itself, and fisherlab's callbacks need it:
to log through ``Trainer.log`` (so ``report_to`` backends get the values), to reach the
other callbacks (the probe-to-unfreezing hand-off below) and to look at the DDP wrapper.

The rule:

* a Trainer class made by :func:`fisherlab.hf.make_trainer_class` binds every
  :class:`TrainerBoundCallback` in its ``__init__`` and in ``add_callback``;
* with a plain ``Trainer(callbacks=[cb])`` (or ``AdapterTrainer``), call
  ``cb.bind(trainer)`` once after building the Trainer (``bind`` also registers the
  callback when the Trainer does not hold it yet);
* a callback that reaches ``on_train_begin`` without a bound Trainer that holds it raises
  :class:`UnboundCallbackError` naming both fixes. Nothing walks the call stack.

The hand-off: before the probe measures at a step, every callback of the Trainer that
satisfies :class:`ScheduleSettler` (``UnfreezeCallback``) takes its decision for that step
first, so the ``trainable`` flags of a measurement do not depend on the callback order.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import TrainerCallback

from fisherlab.blocks import BlockMap, BlockMapError
from fisherlab.errors import FisherlabError

_STATE_PREFIX = "fisherlab."


class UnboundCallbackError(FisherlabError, RuntimeError):
    """A callback that needs its Trainer was used without being bound to it."""


@runtime_checkable
class ScheduleSettler(Protocol):
    """A callback that owns a training schedule (which blocks are trainable at a step).

    ``settle(state, model)`` takes the schedule's decision for ``state.global_step`` if it
    has not been taken yet, and must be idempotent: the measuring callback calls it right
    before measuring, and the owner calls it again from its own ``on_step_end``."""

    def settle(self, state: Any, model: torch.nn.Module | None = None) -> None: ...


class TrainerBoundCallback(TrainerCallback):
    """A TrainerCallback that knows its Trainer (see the module docstring for the rule)."""

    _trainer_ref: Any = None

    def bind(self, trainer: Any) -> TrainerBoundCallback:
        """Attach to ``trainer`` (and register with it if it is not registered yet); returns self."""
        if not any(cb is self for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(self)
        self._trainer_ref = weakref.ref(trainer)
        return self

    @property
    def trainer(self) -> Any:
        """The bound Trainer, or None (never bound, garbage-collected, or it no longer holds us)."""
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is not None and not any(cb is self for cb in trainer.callback_handler.callbacks):
            return None
        return trainer

    def require_trainer(self) -> Any:
        """The bound Trainer; :class:`UnboundCallbackError` if there is none."""
        trainer = self.trainer
        if trainer is None:
            name = type(self).__name__
            raise UnboundCallbackError(
                f"{name} is not bound to the Trainer that runs it. Build the Trainer from "
                f"fisherlab.make_trainer_class(Trainer) (it binds its callbacks), or call "
                f"callback.bind(trainer) after Trainer(..., callbacks=[callback]).")
        return trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.require_trainer()

    def _log(self, logs: dict[str, float]) -> None:
        """Log through ``Trainer.log`` (report_to backends and ``state.log_history``)."""
        trainer = self.require_trainer()
        # Trainer.log -> CallbackHandler.on_log resets control.should_log; keep the Trainer's own
        # decision so its loss/lr logging at this same step is not swallowed.
        should_log = trainer.control.should_log
        trainer.log(dict(logs))
        trainer.control.should_log = should_log

    def _settle_schedules(self, state: Any, model: torch.nn.Module) -> None:
        """Let every other :class:`ScheduleSettler` of the Trainer decide this step first."""
        for cb in self.require_trainer().callback_handler.callbacks:
            if cb is not self and isinstance(cb, ScheduleSettler):
                cb.settle(state, model)

    @staticmethod
    def _resolve_blocks(blocks: BlockMap | str | None, model: torch.nn.Module, who: str,
                        discover: bool = False) -> BlockMap:
        """A BlockMap as given, from an adapter name, or (``discover``) for the model's active task module."""
        if isinstance(blocks, BlockMap):
            return blocks
        if isinstance(blocks, str):
            return BlockMap.from_model(model, adapter=blocks)
        if blocks is None and discover:
            from fisherlab.fisher.estimators import active_task_module

            return BlockMap.from_model(model, adapter=active_task_module(model))
        raise BlockMapError(f"{who}: blocks must be a BlockMap or the task adapter's name, got {blocks!r}")


def bind_callbacks(trainer: Any) -> None:
    """Bind every :class:`TrainerBoundCallback` that ``trainer`` holds to it."""
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TrainerBoundCallback):
            cb.bind(trainer)


__all__ = ["ScheduleSettler", "TrainerBoundCallback", "UnboundCallbackError", "bind_callbacks"]
