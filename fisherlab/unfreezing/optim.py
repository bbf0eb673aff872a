"""Optimizer pre-registration: every schedulable parameter is in the optimizer from step 0.

``transformers.Trainer`` and ``adapters.AdapterTrainer`` build the optimizer from the
parameters that require grad *when it is created*; a block frozen at that moment would
never be trained after it is unfrozen (and an optimizer/LR scheduler cannot safely grow
mid-training). :class:`UnfreezeCallback` already makes schedulable parameters trainable
in ``on_init_end``; the mixin below also covers callbacks added after ``__init__`` and
binds every fisherlab callback to its trainer. For hand-written loops use
:func:`schedulable_param_groups`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from fisherlab.blocks import HEAD, BlockMap
from fisherlab.fisher.probe import TrainerBoundCallback


def _unfreeze_callbacks(trainer: Any) -> list[Any]:
    from fisherlab.unfreezing.callback import UnfreezeCallback

    return [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, UnfreezeCallback)]


class SchedulableTrainerMixin:
    """Mix in before a Trainer class: ``class MyTrainer(SchedulableTrainerMixin, Trainer)``.

    * ``__init__`` binds fisherlab callbacks to the trainer (for ``Trainer.log``);
    * ``create_optimizer`` first makes every schedulable parameter of every
      :class:`UnfreezeCallback` trainable, then defers to the base class, so the
      base class's weight-decay grouping (``get_decay_parameter_names``) is kept and
      the LR scheduler is created after all groups exist.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, TrainerBoundCallback):
                cb.bind(self)

    def add_callback(self, callback: Any) -> None:
        super().add_callback(callback)
        added = callback if not isinstance(callback, type) else self.callback_handler.callbacks[-1]
        if isinstance(added, TrainerBoundCallback):
            added.bind(self)

    def create_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            for cb in _unfreeze_callbacks(self):
                cb.prepare(self.model)
        return super().create_optimizer()


_CLASS_CACHE: dict[type, type] = {}


def make_trainer_class(base: type | None = None) -> type:
    """``SchedulableTrainerMixin`` + ``base`` (default ``transformers.Trainer``), e.g.
    ``make_trainer_class(AdapterTrainer)``. The class is cached per base."""
    if base is None:
        from transformers import Trainer

        base = Trainer
    if base not in _CLASS_CACHE:
        _CLASS_CACHE[base] = type(f"Schedulable{base.__name__}", (SchedulableTrainerMixin, base), {})
    return _CLASS_CACHE[base]


def schedulable_param_groups(model: torch.nn.Module, blocks: BlockMap, weight_decay: float = 0.0,
                             no_decay: Iterable[str] = ("bias", "LayerNorm.weight", "layer_norm.weight"),
                             extra: Iterable[str] = ()) -> list[dict[str, Any]]:
    """AdamW parameter groups holding every layer block + head (frozen or not) plus the
    parameters named in ``extra``: ``[{"params": decay, "weight_decay": wd}, {"params": rest, 0.0}]``.

    Parameters whose name ends with an entry of ``no_decay`` get no weight decay.
    """
    names = blocks.layer_blocks + ([HEAD] if blocks.has_head else [])
    params = blocks.all_parameters(model, names)
    named = dict(model.named_parameters())
    for name in extra:
        if name not in named:
            raise KeyError(f"schedulable_param_groups: the model has no parameter {name!r}")
        params.setdefault(name, named[name])
    skip = tuple(no_decay)
    decay = [p for n, p in params.items() if not n.endswith(skip)]
    rest = [p for n, p in params.items() if n.endswith(skip)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
