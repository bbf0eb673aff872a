"""The regularised loss: task loss + regulariser terms, one fused forward for fusable views.

A *term* is a callable ``term(model, batch, outputs, *, step, rng, view_outputs, view_rows)
-> Tensor`` with a ``name`` and a ``fusable`` flag: :class:`~fisherlab.regularisers.FisherPenalty`,
:class:`~fisherlab.regularisers.L2`, :class:`~fisherlab.regularisers.Consistency`.
:func:`regularised_loss` runs one forward for the task loss and all fusable consistency
views (their rows appended to the batch; the task loss sees only the clean rows, whose view
copies carry ignored labels), then adds every term:

    total = task loss + sum_k term_k

The Hugging Face Trainer integration is :class:`fisherlab.hf.RegularisedTrainerMixin`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor

from fisherlab.regularisers.base import RegulariserError, batch_size
from fisherlab.regularisers.views import ViewRows
from fisherlab.torch_utils import TEXT_KEYS, RNGSnapshot, slice_batch, unwrap_model

Term = Any  # FisherPenalty | L2 | Consistency | any callable with .name and .fusable
ForwardFn = Callable[[torch.nn.Module, dict[str, Any]], tuple[Tensor, Any]]


# --------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------
def _default_forward(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Any]:
    outputs = model(**batch)
    loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs[0]
    if loss is None:
        raise RegulariserError("the model returned no loss: the batch needs its labels")
    return loss, outputs


def _pad_value(key: str, model: torch.nn.Module) -> int:
    if key == "input_ids":
        pad = getattr(getattr(unwrap_model(model), "config", None), "pad_token_id", None)
        return int(pad) if pad is not None else 0
    if key == "labels":
        return -100
    return 0


def _fuse(model: torch.nn.Module, batch: Mapping[str, Any], views: Sequence[ViewRows]) -> dict[str, Any]:
    """Clean rows then each view's rows, padded on the right to a common length. View rows get
    ignored labels (-100; QA positions = the ignored index seq_len) so the task loss is the
    clean batch's."""
    parts = [dict(batch)] + [dict(v.batch) for v in views]
    keys = [k for k, v in batch.items() if isinstance(v, Tensor)]
    seq_keys = [k for k in keys if k in ("input_ids", "attention_mask", "token_type_ids")]
    width = max(int(p["input_ids"].shape[-1]) for p in parts) if "input_ids" in batch else None
    fused: dict[str, Any] = {}
    for key in keys:
        pieces = []
        for index, part in enumerate(parts):
            value = part.get(key)
            if index > 0 and key in ("start_positions", "end_positions"):
                if width is None:
                    raise RegulariserError("a QA batch needs input_ids for a fused consistency forward")
                value = torch.full_like(batch[key], width)  # the QA heads' ignored index: seq_len
            elif index > 0 and key == "labels":
                value = torch.full_like(batch[key], -100)
            elif value is None:
                raise RegulariserError(f"a consistency view has no field {key!r} for the fused forward")
            if width is not None and (key in seq_keys or (key == "labels" and value.dim() == batch["input_ids"].dim())):
                extra = width - int(value.shape[-1])
                if extra:
                    value = torch.nn.functional.pad(value, (0, extra), value=_pad_value(key, model))
            pieces.append(value)
        fused[key] = torch.cat(pieces, dim=0)
    return fused


def _split_outputs(outputs: Any, total: int, start: int, stop: int) -> dict[str, Any]:
    keys = outputs.keys() if isinstance(outputs, Mapping) else []
    out: dict[str, Any] = {}
    for key in keys:
        value = outputs[key]
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == total:
            out[key] = value[start:stop]
        elif isinstance(value, tuple) and value and all(isinstance(v, Tensor) and v.shape[0] == total
                                                         for v in value):
            out[key] = tuple(v[start:stop] for v in value)
    return out


def regularised_loss(model: torch.nn.Module, batch: Mapping[str, Any], terms: Sequence[Term], *, step: int = 0,
                     forward: ForwardFn | None = None) -> tuple[Tensor, dict[str, Tensor], Any]:
    """``(total, parts, outputs)``: ``parts`` has ``"task_loss"`` and one entry per term name;
    ``outputs`` are the model's outputs on the clean rows. ``forward(model, batch) -> (loss,
    outputs)`` computes the task loss (default: the model's own ``loss``); it receives the
    batch without raw-text fields."""
    forward = forward or _default_forward
    clean = {k: v for k, v in batch.items() if k not in TEXT_KEYS}
    size = batch_size(clean)
    fused_views: list[tuple[Term, ViewRows]] = []
    for term in terms:
        if getattr(term, "fusable", False):
            fused_views.append((term, term.rows(model, batch, step)))
    rng: RNGSnapshot | None = None
    view_outputs: dict[int, tuple[Any, ViewRows]] = {}
    if fused_views:
        fused = _fuse(model, clean, [rows for _, rows in fused_views])
        total = batch_size(fused)
        contexts = []
        offset = size
        for _, rows in fused_views:
            contexts.append(rows.context(model, offset, total))
            offset += batch_size(rows.batch)
        with ExitStack() as stack:  # a context failing to enter leaves none of the others installed
            for ctx in contexts:
                stack.enter_context(ctx)
            loss, outputs_all = forward(model, fused)
        outputs = _split_outputs(outputs_all, total, 0, size)
        clean_view = slice_batch(fused, 0, size)
        offset = size
        for term, rows in fused_views:
            n = batch_size(rows.batch)
            view_outputs[id(term)] = (_split_outputs(outputs_all, total, offset, offset + n), rows)
            offset += n
        term_batch: Mapping[str, Any] = clean_view
    else:
        rng = RNGSnapshot(unwrap_model(model))
        loss, outputs = forward(model, clean)
        term_batch = clean
    movers = _task_movers(model, terms, fused=bool(fused_views))
    parts: dict[str, Tensor] = {"task_loss": loss}
    # with a mover, the task loss at theta is only logged (never back-propagated)
    total_loss = loss.detach() if movers else loss
    for name, term in zip(_unique_names(terms), terms, strict=True):
        if term in movers:
            assert rng is not None
            moved_loss, value = term.with_task(model, term_batch, outputs, forward, step=step, rng=rng,
                                               retain_graph=len(terms) > 1)
            # the task loss is logged at theta; its gradient comes from the perturbed point
            total_loss = total_loss + (moved_loss - moved_loss.detach())
        else:
            extra = {}
            if id(term) in view_outputs:
                extra = {"view_outputs": view_outputs[id(term)][0], "view_rows": view_outputs[id(term)][1]}
            value = term(model, term_batch, outputs, step=step, rng=rng, **extra)
        parts[name] = value
        total_loss = total_loss + value
    return total_loss, parts, outputs


def _task_movers(model: torch.nn.Module, terms: Sequence[Term], *, fused: bool) -> list[Term]:
    """The (at most one) term that evaluates the task loss itself (FisherPenalty's shared
    finite difference); none when a fused view or another such term is present."""
    candidates = [t for t in terms if hasattr(t, "takes_task_forward") and t.takes_task_forward(model)]
    if len(candidates) == 1 and not fused:
        return candidates
    explicit = [t for t in candidates if getattr(t, "task_at", None) == "perturbed"]
    if explicit:
        raise RegulariserError("FisherPenalty(task_at='perturbed') needs to be the only Fisher penalty and "
                               "cannot share a step with a fused consistency view; use task_at='auto'")
    return []


def _unique_names(terms: Sequence[Term]) -> list[str]:
    names, seen = [], {}
    for term in terms:
        base = getattr(term, "name", type(term).__name__.lower())
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}.{seen[base]}")
    return names


__all__ = ["ForwardFn", "Term", "regularised_loss"]
