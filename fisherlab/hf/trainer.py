"""One Trainer-class factory: :func:`make_trainer_class` (binding, unfreezing, regularisers).

``TrainerClass = make_trainer_class(Trainer)`` (or ``AdapterTrainer``) gives a subclass that

* binds every fisherlab callback to the Trainer in ``__init__`` and ``add_callback``
  (:mod:`fisherlab.hf.binding`; always);
* with ``unfreezing=True`` (:class:`UnfreezingTrainerMixin`): makes every schedulable
  parameter of every :class:`~fisherlab.hf.UnfreezeCallback` trainable right before the
  optimizer is created, so blocks unfrozen later are in the optimizer from step 0 (the
  base class's weight-decay grouping is kept and the LR scheduler is built after all
  groups exist) -- also for callbacks added after ``__init__``;
* with ``regularisers=True`` (:class:`~fisherlab.hf.RegularisedTrainerMixin`): accepts
  ``regularisers=[...]`` and ``writer=`` and adds the terms to the loss.

For hand-written loops use :func:`fisherlab.unfreezing.schedulable_param_groups`.
"""

from __future__ import annotations

from typing import Any

import torch

from fisherlab.hf.binding import TrainerBoundCallback, bind_callbacks
from fisherlab.hf.regularised import RegularisedTrainerMixin


def fix_loss_kwargs(trainer: Any) -> bool:
    """Make the Trainer divide the loss by the gradient-accumulation steps for adapters heads.

    ``transformers.Trainer`` skips that division when the model's ``forward`` takes ``**kwargs``
    (it then passes ``num_items_in_batch`` and trusts the model to normalise across
    micro-batches). The flexible heads of ``adapters`` (``BertAdapterModel`` & co.) take
    ``**kwargs`` but ignore ``num_items_in_batch`` and return a per-micro-batch mean, so with
    ``gradient_accumulation_steps = G`` the update and the logged loss were ``G`` times too large
    (and gradient clipping acted on the inflated norm). Returns True when it changed the flag.
    """
    from fisherlab.torch_utils import unwrap_model

    try:
        from adapters.heads import ModelWithFlexibleHeadsAdaptersMixin
    except ImportError:  # adapters not installed: nothing of its kind to fix
        return False
    model = unwrap_model(trainer.model)
    if isinstance(model, ModelWithFlexibleHeadsAdaptersMixin) and getattr(trainer, "model_accepts_loss_kwargs", False):
        trainer.model_accepts_loss_kwargs = False
        return True
    return False


class BindingTrainerMixin:
    """Binds fisherlab callbacks (:class:`TrainerBoundCallback`) to this Trainer and normalises
    the loss of adapters heads under gradient accumulation (:func:`fix_loss_kwargs`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bind_callbacks(self)
        fix_loss_kwargs(self)

    def add_callback(self, callback: Any) -> None:
        super().add_callback(callback)
        added = callback if not isinstance(callback, type) else self.callback_handler.callbacks[-1]
        if isinstance(added, TrainerBoundCallback):
            added.bind(self)


class UnfreezingTrainerMixin:
    """Pre-registers every schedulable parameter in the optimizer (module docstring)."""

    def create_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            from fisherlab.hf.unfreeze_callback import UnfreezeCallback

            for cb in self.callback_handler.callbacks:
                if isinstance(cb, UnfreezeCallback):
                    cb.prepare(self.model)
        return super().create_optimizer()


_CLASS_CACHE: dict[tuple[type, bool, bool], type] = {}


def make_trainer_class(base: type | None = None, *, unfreezing: bool = True, regularisers: bool = True) -> type:
    """``base`` (default ``transformers.Trainer``; e.g. ``adapters.AdapterTrainer``) with callback
    binding, plus the unfreezing and/or regulariser mixins. Cached per arguments, so the same
    call returns the same class."""
    if base is None:
        from transformers import Trainer

        base = Trainer
    key = (base, bool(unfreezing), bool(regularisers))
    if key not in _CLASS_CACHE:
        mixins: list[type] = [BindingTrainerMixin]
        if unfreezing:
            mixins.append(UnfreezingTrainerMixin)
        if regularisers:
            mixins.append(RegularisedTrainerMixin)
        name = "Fisherlab" + ("Unfreezing" if unfreezing else "") + ("Regularised" if regularisers else "")
        _CLASS_CACHE[key] = type(f"{name}{base.__name__}", (*mixins, base), {})
    return _CLASS_CACHE[key]


__all__ = ["BindingTrainerMixin", "UnfreezingTrainerMixin", "fix_loss_kwargs", "make_trainer_class"]
