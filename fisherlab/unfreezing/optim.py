"""Optimizer parameter groups holding every schedulable parameter, for hand-written loops.

An optimizer (and its LR scheduler) cannot safely grow mid-training, so a block frozen
when the optimizer is created must already be in it. Inside a Trainer this is done by
:func:`fisherlab.hf.make_trainer_class` and :class:`fisherlab.hf.UnfreezeCallback`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from fisherlab.blocks import HEAD, BlockMap


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
