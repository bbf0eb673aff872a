"""Regularised training: task loss + regulariser terms, for custom loops and the HF Trainer.

A *term* is a callable ``term(model, batch, outputs, *, step, rng, view_outputs, view_rows)
-> Tensor`` with a ``name`` and a ``fusable`` flag: :class:`~fisherlab.fisher.penalty.FisherPenalty`,
:class:`~fisherlab.fisher.penalty.L2`, :class:`~fisherlab.fisher.consistency.Consistency`.
:func:`regularised_loss` runs one forward for the task loss and all fusable consistency
views (their rows appended to the batch; the task loss sees only the clean rows, whose view
copies carry ignored labels), then adds every term:

    total = task loss + sum_k term_k

Trainer integration: :class:`RegularisedTrainerMixin` (or ``make_regularised_trainer(Trainer)``,
also for ``adapters.AdapterTrainer``) overrides ``compute_loss``; each term's value and the
task loss are averaged over the logging interval, added to the Trainer's ``log`` as
``reg/<name>`` and ``task_loss``, and written to the run's ``metrics.jsonl`` through an
optional ``writer`` (``log_metric(step, split, language, metric, value)``). Under gradient
accumulation the total is divided by the accumulation steps (the mixin turns off the
``num_items_in_batch`` loss path), so terms and task loss are weighted alike. Logged values
are per-rank (not all-reduced) under DDP.

Strings (``regulariser_from_string``; the grammar and every key: :mod:`fisherlab.spec.regularisers`)::

    fisher_penalty:alpha=0.01;method=finite_difference
    consistency:view=dropout;weight=1.0
    l2:weight=0.01;to=init
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor

from fisherlab.fisher.consistency import (
    Consistency,
    Dropout,
    EmbeddingNoise,
    ParameterNoise,
    Resegment,
    View,
    ViewRows,
)
from fisherlab.fisher.penalty import (
    L2,
    TEXT_KEYS,
    FisherPenalty,
    RegulariserError,
    RNGSnapshot,
    batch_size_of,
    slice_batch,
    unwrap_model,
)
from fisherlab.spec.grammar import SpecError, split_specs
from fisherlab.spec.regularisers import (
    ConsistencySpec,
    FisherPenaltySpec,
    L2Spec,
    RegulariserSpec,
    regulariser_spec,
)

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
    size = batch_size_of(clean)
    fused_views: list[tuple[Term, ViewRows]] = []
    for term in terms:
        if getattr(term, "fusable", False):
            fused_views.append((term, term.rows(model, batch, step)))
    rng: RNGSnapshot | None = None
    view_outputs: dict[int, tuple[Any, ViewRows]] = {}
    if fused_views:
        fused = _fuse(model, clean, [rows for _, rows in fused_views])
        total = batch_size_of(fused)
        contexts = []
        offset = size
        for _, rows in fused_views:
            contexts.append(rows.context(model, offset, total))
            offset += batch_size_of(rows.batch)
        with ExitStack() as stack:  # a context failing to enter leaves none of the others installed
            for ctx in contexts:
                stack.enter_context(ctx)
            loss, outputs_all = forward(model, fused)
        outputs = _split_outputs(outputs_all, total, 0, size)
        clean_view = slice_batch(fused, 0, size)
        offset = size
        for term, rows in fused_views:
            n = batch_size_of(rows.batch)
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


# --------------------------------------------------------------------------------------
# configuration strings: specs (fisherlab.spec.regularisers) -> term objects
# --------------------------------------------------------------------------------------
def regulariser_from_spec(spec: RegulariserSpec, *, tokenizer: Any = None) -> Term:
    """The term object of a parsed spec. ``tokenizer`` is needed by ``consistency:view=resegment``."""
    if isinstance(spec, FisherPenaltySpec):
        return FisherPenalty(**spec.term_kwargs())
    if isinstance(spec, L2Spec):
        return L2(**spec.term_kwargs())
    if isinstance(spec, ConsistencySpec):
        views: dict[str, Callable[..., View]] = {"dropout": Dropout, "embedding_noise": EmbeddingNoise,
                                                 "parameter_noise": ParameterNoise}
        if spec.view == "resegment":
            if tokenizer is None:
                raise RegulariserError(f"regulariser {spec.to_string()!r}: view=resegment needs the tokenizer "
                                       "(pass tokenizer=..., or give the Trainer a processing_class)")
            view: View = Resegment(tokenizer, **spec.view_kwargs())
        else:
            view = views[spec.view](**spec.view_kwargs())
        return Consistency(view, **spec.term_kwargs())
    raise RegulariserError(f"no term is built for regulariser spec {spec!r} (a {type(spec).__name__})")


def regulariser_from_string(spec: str | Mapping[str, Any] | RegulariserSpec, *, tokenizer: Any = None) -> Term:
    """One term from ``kind:key=value;key=value`` (kinds, aliases and keys: :mod:`fisherlab.spec.regularisers`)."""
    try:
        parsed = regulariser_spec(spec)
    except SpecError as err:
        raise RegulariserError(str(err)) from None
    return regulariser_from_spec(parsed, tokenizer=tokenizer)


def regularisers_from_strings(specs: str | Iterable[str | Term] | None, *, tokenizer: Any = None) -> list[Term]:
    """Terms from strings (a list, or one string where each ``name:`` starts a new spec) or ready terms."""
    try:
        items = split_specs(specs, "regularisers")
    except SpecError as err:
        raise RegulariserError(str(err)) from None
    return [regulariser_from_string(s, tokenizer=tokenizer) if isinstance(s, (str, Mapping, RegulariserSpec)) else s
            for s in items]


# --------------------------------------------------------------------------------------
# the Trainer
# --------------------------------------------------------------------------------------
class KeepText:
    """Wrap a collator so the raw-text fields (``words``, ``word_ids``) pass through as
    per-example lists while the wrapped collator pads and tensorises the rest."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        kept = {key: [f[key] for f in features] for key in TEXT_KEYS if features and key in features[0]}
        batch = self.collator([{k: v for k, v in f.items() if k not in TEXT_KEYS} for f in features])
        batch.update(kept)
        return batch


class RegularisedTrainerMixin:
    """Adds ``regularisers`` (terms or strings) to a ``transformers.Trainer`` subclass.

    ``RegularisedTrainer = make_regularised_trainer(Trainer)`` then
    ``RegularisedTrainer(model, args, ..., regularisers=["l2:weight=0.01"], writer=run_writer)``.
    The batches may carry ``words`` (for ``Resegment``): they are kept as a dataset column
    (wrap the collator in :class:`KeepText`) and never passed to the model.
    """

    def __init__(self, *args: Any, regularisers: str | Iterable[str | Term] | None = None,
                 writer: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tokenizer = getattr(self, "processing_class", None)
        self.regularisers: list[Term] = regularisers_from_strings(regularisers, tokenizer=tokenizer)
        self.regulariser_writer = writer
        if self.regularisers:
            # The Trainer then divides the returned total by the accumulation steps, so task loss
            # and terms (both per-micro-batch means) are scaled alike. (With num_items_in_batch
            # the task loss alone would be normalised across micro-batches -- or not at all by
            # models that ignore it, such as adapters' heads.)
            self.model_accepts_loss_kwargs = False
        self._reg_sums: dict[str, float] = {}
        self._reg_count = 0

    # raw-text columns survive the Trainer's column removal and never reach the model
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None:
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *TEXT_KEYS]))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = {k: v for k, v in inputs.items() if k not in TEXT_KEYS}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.regularisers or not model.training:
            inputs = {k: v for k, v in inputs.items() if k not in TEXT_KEYS}
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        parent = super()

        def forward(m: torch.nn.Module, b: dict[str, Any]) -> tuple[Tensor, Any]:
            return parent.compute_loss(m, b, return_outputs=True, num_items_in_batch=num_items_in_batch)

        total, parts, outputs = regularised_loss(model, inputs, self.regularisers, step=self.state.global_step,
                                                 forward=forward)
        for name, value in parts.items():
            key = name if name == "task_loss" else f"reg/{name}"
            self._reg_sums[key] = self._reg_sums.get(key, 0.0) + float(value.detach())
        self._reg_count += 1
        return (total, outputs) if return_outputs else total

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._reg_count:
            averages = {k: v / self._reg_count for k, v in self._reg_sums.items()}
            logs.update(averages)
            self._reg_sums, self._reg_count = {}, 0
            if self.regulariser_writer is not None and self.is_world_process_zero():
                for key, value in averages.items():
                    self.regulariser_writer.log_metric(self.state.global_step, "train", None, key, value)
        super().log(logs, *args, **kwargs)


def make_regularised_trainer(trainer_class: type) -> type:
    """``trainer_class`` (``Trainer``, ``AdapterTrainer``, ...) with :class:`RegularisedTrainerMixin`."""
    return type(f"Regularised{trainer_class.__name__}", (RegularisedTrainerMixin, trainer_class), {})


__all__ = ["Consistency", "Dropout", "EmbeddingNoise", "FisherPenalty", "KeepText", "L2", "ParameterNoise",
           "RegularisedTrainerMixin", "RegulariserError", "Resegment", "make_regularised_trainer",
           "regularised_loss", "regulariser_from_spec", "regulariser_from_string", "regularisers_from_strings"]
