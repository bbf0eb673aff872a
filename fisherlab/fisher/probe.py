"""FisherProbe: when and on what to measure tr(F) during training, without touching training.

Two pieces:

* :class:`FisherProbe` decides *what* is measured: it draws up to ``n_batches``
  training batches from its own seeded sampler (a generator seeded from
  ``(seed, step)``, so a measurement is a function of the step and survives
  resumption), moves them to the model's device and calls
  :func:`fisherlab.fisher.trace_fisher` in the requested module mode. It forks the
  RNG, restores every module's train/eval flag and never touches ``.grad``, the
  optimizer or the training data loader, so a run with the probe produces the
  same weights as one without it. Under ``torch.distributed`` each rank measures
  its share of the batches and the per-block traces are all-reduced (weighted by
  the number of examples), so every rank sees the same numbers.
* :class:`FisherProbeCallback` decides *when*: every ``every`` optimizer steps
  (and at step 0 and at the end), it logs ``fisher/<block>`` and
  ``fisher/mean_trainable`` through ``Trainer.log`` (so ``report_to`` backends get
  them) and appends rows to the run store (``writer.log_fisher``).

Measurements at step ``i`` see the weights after ``i`` optimizer steps, before the
forward of step ``i``; they are taken in ``on_step_end`` of step ``i-1`` (before a
checkpoint at step ``i`` is written, so the checkpoint and the run store agree on
resume).
"""

from __future__ import annotations

import inspect
import math
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback

from fisherlab.blocks import BlockMap, BlockMapError

MODES = ("eval", "train", "as_is")
_STATE_PREFIX = "fisherlab."


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence: well mixed, stable across versions)."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@dataclass
class ProbeMeasurement:
    """Per-block tr(F) at one step (combined over ranks under DDP)."""

    step: int
    traces: dict[str, float]
    stderr: dict[str, float]
    n_examples: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_records(self, blocks: BlockMap, trainable: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Run-store rows ``{block, layer, trace, stderr, trainable, n_examples, estimator}``."""
        on = set(trainable)
        return [
            {"block": name, "layer": blocks[name].layer, "trace": float(value),
             "stderr": float(self.stderr.get(name, math.nan)), "trainable": name in on,
             "n_examples": int(self.n_examples), "estimator": self.meta.get("estimator")}
            for name, value in self.traces.items()
        ]

    def mean_over(self, names: Iterable[str]) -> float:
        """Mean trace over ``names`` (the paper's AGGAVG over trainable blocks); NaN if none."""
        values = [self.traces[n] for n in names if n in self.traces]
        return float(sum(values) / len(values)) if values else math.nan


class FisherProbe:
    """Measures tr(F) per block on training batches drawn from its own seeded sampler.

    Args:
        n_batches: at most this many batches per measurement (fewer if the data is smaller).
        estimator: a :data:`fisherlab.fisher.ESTIMATORS` name (``per_example`` by default;
            ``reference`` reproduces the FUN paper's released code).
        seed: seeds the batch draw and the estimator's label sampling, mixed with the step.
        batch_size: examples per batch; None = the trainer's per-device batch size.
        mode: ``"eval"`` (dropout off; default: tr(F) of the deterministic model),
            ``"train"`` (dropout on, as the released code measured), ``"as_is"``.
        block_names: blocks to measure (all of the BlockMap by default).
    """

    def __init__(self, n_batches: int = 40, estimator: str = "per_example", seed: int = 0,
                 batch_size: int | None = None, mode: str = "eval",
                 block_names: Sequence[str] | None = None) -> None:
        if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches <= 0:
            raise ValueError(f"FisherProbe: n_batches must be a positive integer, got {n_batches!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
            raise ValueError(f"FisherProbe: batch_size must be a positive integer or None, got {batch_size!r}")
        if mode not in MODES:
            raise ValueError(f"FisherProbe: mode must be one of {MODES}, got {mode!r}")
        self.n_batches = n_batches
        self.estimator = estimator
        self.seed = int(seed)
        self.batch_size = batch_size
        self.mode = mode
        self.block_names = list(block_names) if block_names is not None else None
        self.dataset: Any = None
        self.collate_fn: Any = None
        self._data_batch_size: int | None = None
        self._cache: tuple[tuple, ProbeMeasurement] | None = None
        self._from_trainer = False  # data attached by a callback from the trainer (re-attached per train())

    # -- data ------------------------------------------------------------------------------
    def attach(self, dataset: Any, collate_fn: Any = None, batch_size: int | None = None) -> FisherProbe:
        """Use ``dataset`` (map-style: ``len`` and ``__getitem__``) with ``collate_fn``."""
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise ValueError(f"FisherProbe.attach: the dataset must be map-style (len + indexing), "
                             f"got {type(dataset).__name__}; iterable datasets are not supported")
        if len(dataset) == 0:
            raise ValueError("FisherProbe.attach: the dataset is empty")
        self.dataset = dataset
        self.collate_fn = collate_fn
        self._data_batch_size = batch_size
        self._cache = None
        self._from_trainer = False
        return self

    def attach_dataloader(self, dataloader: Any, batch_size: int | None = None) -> FisherProbe:
        """Use a (training) DataLoader's dataset and collate function; its iteration is never touched."""
        dataset = getattr(dataloader, "dataset", None)
        if dataset is None:
            raise ValueError("FisherProbe.attach_dataloader: the dataloader has no .dataset")
        size = batch_size or getattr(dataloader, "batch_size", None)
        if size is None and getattr(dataloader, "batch_sampler", None) is not None:
            size = getattr(dataloader.batch_sampler, "batch_size", None)
        return self.attach(dataset, getattr(dataloader, "collate_fn", None), size)

    @property
    def attached(self) -> bool:
        return self.dataset is not None

    def config(self) -> dict[str, Any]:
        """The settings, JSON-able (for ``run.json``'s ``fisher`` entry)."""
        return {"estimator": self.estimator, "n_batches": self.n_batches, "seed": self.seed,
                "batch_size": self.batch_size or self._data_batch_size, "mode": self.mode}

    def batch_indices(self, step: int) -> list[list[int]]:
        """Dataset indices of the batches measured at ``step`` (all ranks together)."""
        if not self.attached:
            raise RuntimeError("FisherProbe: no data attached (call attach(dataset, collate_fn) or use "
                               "FisherProbeCallback / UnfreezeCallback, which attach the training data)")
        size = self.batch_size or self._data_batch_size
        if not size:
            raise ValueError("FisherProbe: batch_size unknown; pass batch_size=")
        n = len(self.dataset)
        gen = torch.Generator().manual_seed(_mix_seed(self.seed, step, 0x5EED))
        order = torch.randperm(n, generator=gen).tolist()
        n_batches = min(self.n_batches, math.ceil(n / size))
        return [order[i * size:(i + 1) * size] for i in range(n_batches)]

    def batches(self, step: int, device: torch.device | str | None = None) -> list[Any]:
        """This rank's batches for ``step`` (collated, on ``device``)."""
        rank, world = _dist_info()
        mine = [b for i, b in enumerate(self.batch_indices(step)) if i % world == rank]
        out = []
        for idx in mine:
            examples = [self.dataset[j] for j in idx]
            batch = self.collate_fn(examples) if self.collate_fn is not None else \
                torch.utils.data.default_collate(examples)
            if hasattr(batch, "data") and isinstance(batch.data, dict):  # BatchEncoding
                batch = dict(batch.data)
            out.append(_to_device(batch, torch.device(device)) if device is not None else batch)
        return out

    # -- measuring ---------------------------------------------------------------------------
    def measure(self, model: torch.nn.Module, blocks: BlockMap, step: int,
                block_names: Sequence[str] | None = None) -> ProbeMeasurement:
        """tr(F) per block at ``step`` (cached: a second call for the same step/blocks is free).

        Collective under ``torch.distributed``: every rank must call it.
        """
        names = list(block_names if block_names is not None else (self.block_names or blocks.names))
        unknown = [n for n in names if n not in blocks]
        if unknown:
            raise BlockMapError(f"FisherProbe: unknown blocks {unknown}; the BlockMap has {blocks.names}")
        key = (int(step), tuple(names), id(model))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        from fisherlab.fisher import trace_fisher

        rank, world = _dist_info()
        device = _model_device(model)
        batches = self.batches(step, device)
        modes = {m: m.training for m in model.modules()}
        devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                if self.mode == "eval":
                    model.eval()
                elif self.mode == "train":
                    model.train()
                if batches:
                    m = trace_fisher(model, batches, blocks=blocks, estimator=self.estimator,
                                     seed=_mix_seed(self.seed, step, rank), block_names=names)
                    traces = {n: float(m.traces[n]) for n in names}
                    stderr = {n: float(m.stderr.get(n, math.nan)) for n in names}
                    n_ex, meta = int(m.n_examples), dict(m.meta)
                else:  # more ranks than batches: this rank contributes nothing
                    traces = {n: 0.0 for n in names}
                    stderr = {n: 0.0 for n in names}
                    n_ex, meta = 0, {"estimator": self.estimator}
        finally:
            for module, was_training in modes.items():
                module.training = was_training
        if world > 1:
            traces, stderr, n_ex = _all_reduce_traces(names, traces, stderr, n_ex, device)
        meta.setdefault("estimator", self.estimator)
        meta.update({"probe_mode": self.mode, "world_size": world, "n_batches": len(self.batch_indices(step))})
        result = ProbeMeasurement(step=int(step), traces=traces, stderr=stderr, n_examples=n_ex, meta=meta)
        self._cache = (key, result)
        return result


def _all_reduce_traces(names: Sequence[str], traces: Mapping[str, float], stderr: Mapping[str, float],
                       n: int, device: torch.device) -> tuple[dict[str, float], dict[str, float], int]:
    """Combine per-rank means/standard errors into the pooled mean and its standard error.

    Each rank sends n, n*mean and n*(var + mean^2) with var = stderr^2 * n (the per-example
    variance behind its standard error); the pooled mean is sum(n*mean)/N and the pooled
    standard error sqrt((E[x^2] - mean^2) / N).
    """
    dist = torch.distributed
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    values = [float(n)]
    for name in names:
        mean, se = float(traces[name]), float(stderr[name])
        var = se * se * n if math.isfinite(se) else 0.0
        values += [n * mean, n * (var + mean * mean)]
    buf = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(buf)
    total = int(round(buf[0].item()))
    out_t, out_se = {}, {}
    for i, name in enumerate(names):
        s1, s2 = buf[1 + 2 * i].item(), buf[2 + 2 * i].item()
        mean = s1 / total if total else math.nan
        var = max(s2 / total - mean * mean, 0.0) if total else math.nan
        out_t[name] = mean
        out_se[name] = math.sqrt(var / total) if total else math.nan
    return out_t, out_se, total


# -- Trainer glue ---------------------------------------------------------------------------

def active_task_module(model: torch.nn.Module) -> str | None:
    """The task module of an adapters model's active setup (see ``trace_fisher``), else None (full model)."""
    from fisherlab.fisher.estimators import active_task_module as _active

    return _active(model)


def find_trainer(callback: Any) -> Any:
    """The ``transformers.Trainer`` whose callback handler holds ``callback``, found on the call
    stack (callbacks are invoked from Trainer methods); None if there is none."""
    from transformers import Trainer

    frame = inspect.currentframe()
    try:
        while frame is not None:
            obj = frame.f_locals.get("self")
            if isinstance(obj, Trainer):
                handler = getattr(obj, "callback_handler", None)
                if handler is not None and any(cb is callback for cb in handler.callbacks):
                    return obj
            frame = frame.f_back
    finally:
        del frame
    return None


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


class TrainerBoundCallback(TrainerCallback):
    """A TrainerCallback that knows its Trainer (to call ``Trainer.log``).

    ``bind(trainer)`` sets it explicitly; otherwise it is found when the Trainer first
    calls the callback (``Trainer(callbacks=[cb])`` or ``trainer.add_callback(cb)`` both work).
    """

    _trainer_ref: Any = None
    _warned_unbound = False

    def bind(self, trainer: Any) -> TrainerBoundCallback:
        """Attach to ``trainer`` (and register with it if it is not registered yet)."""
        if not any(cb is self for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(self)
        self._trainer_ref = weakref.ref(trainer)
        return self

    @property
    def trainer(self) -> Any:
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is not None and not any(cb is self for cb in trainer.callback_handler.callbacks):
            trainer = None  # removed from that trainer (or reused in another one): look again
        if trainer is None:
            trainer = find_trainer(self)
            if trainer is not None:
                self._trainer_ref = weakref.ref(trainer)
        return trainer

    def _refresh_trainer(self) -> None:
        """Re-bind to the Trainer that is calling us now (a callback may be reused across Trainers)."""
        found = find_trainer(self)
        if found is not None:
            self._trainer_ref = weakref.ref(found)

    def _log(self, logs: dict[str, float], state: Any) -> None:
        """Log through ``Trainer.log`` (report_to backends); else only into ``state.log_history``."""
        trainer = self.trainer
        if trainer is not None:
            # Trainer.log -> CallbackHandler.on_log resets control.should_log; keep the Trainer's own
            # decision so its loss/lr logging at this same step is not swallowed.
            should_log = trainer.control.should_log
            trainer.log(dict(logs))
            trainer.control.should_log = should_log
            return
        if not self._warned_unbound:
            warnings.warn(f"{type(self).__name__}: no Trainer bound; values go to state.log_history only "
                          "(call .bind(trainer) to log through report_to)", stacklevel=2)
            self._warned_unbound = True
        state.log_history.append({**logs, "step": state.global_step})

    @staticmethod
    def _resolve_blocks(blocks: BlockMap | str | None, model: torch.nn.Module, who: str,
                        discover: bool = False) -> BlockMap:
        """A BlockMap as given, from an adapter name, or (``discover``) for the model's active task module."""
        if isinstance(blocks, BlockMap):
            return blocks
        if isinstance(blocks, str):
            return BlockMap.from_model(model, adapter=blocks)
        if blocks is None and discover:
            return BlockMap.from_model(model, adapter=active_task_module(model))
        raise BlockMapError(f"{who}: blocks must be a BlockMap or the task adapter's name, got {blocks!r}")


class FisherProbeCallback(TrainerBoundCallback):
    """Measure tr(F) per block every ``every`` optimizer steps during ``Trainer.train``.

    Measures at step 0, at every multiple of ``every`` and (``at_end``) after the last
    step; logs ``fisher/<block>`` and ``fisher/mean_trainable`` (mean over the measured
    blocks that are trainable at that step) through ``Trainer.log`` and writes
    ``writer.log_fisher(rows, step)`` on the main process. Data: its own sampler over
    the trainer's training dataset and collator (see :class:`FisherProbe`); the
    training data order and every RNG stream are left alone.

    ``blocks`` is a BlockMap, the task adapter's name, or None (the model's active task
    module; the whole layers of a model without adapters); ``probe`` shares a
    :class:`FisherProbe` (e.g. with the ``fisher`` strategy; its settings win).
    """

    def __init__(self, every: int = 100, n_batches: int = 40, estimator: str = "per_example",
                 blocks: BlockMap | str | None = None, writer: Any = None, seed: int = 0,
                 batch_size: int | None = None, mode: str = "eval",
                 block_names: Sequence[str] | None = None, at_end: bool = True,
                 probe: FisherProbe | None = None, log_prefix: str = "fisher/",
                 state_key: str = "fisher_probe") -> None:
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
        self.history: list[ProbeMeasurement] = []

    def config(self) -> dict[str, Any]:
        """``run.json``'s ``fisher`` entry: estimator, every, n_batches, ..."""
        return {"every": self.every, **self.probe.config()}

    # -- events ------------------------------------------------------------------------------
    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.blocks = self._resolve_blocks(self.blocks, model, "FisherProbeCallback", discover=True)
        self._refresh_trainer()

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self._refresh_trainer()
        self.blocks = self._resolve_blocks(self.blocks, model, "FisherProbeCallback", discover=True)
        attach_training_data(self.probe, train_dataloader, args, "FisherProbeCallback")
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

    def _settle_schedule(self, state: Any, model: torch.nn.Module) -> None:
        """Let any unfreezing callback take its decision for this step first (order-independent
        ``trainable`` flags)."""
        trainer = self.trainer
        if trainer is None:
            return
        for cb in trainer.callback_handler.callbacks:
            settle = getattr(cb, "settle", None)
            if settle is not None and cb is not self:
                settle(state, model)

    def _measure(self, args: Any, state: Any, model: torch.nn.Module) -> ProbeMeasurement | None:
        step = int(state.global_step)
        if step <= self.measured_through:
            return None
        self._settle_schedule(state, model)
        result = self.probe.measure(model, self.blocks, step)
        trainable = self.blocks.trainable_blocks(model)
        rows = result.to_records(self.blocks, trainable)
        self.history.append(result)
        self.measured_through = step
        self._save_state(state)
        logs = {f"{self.log_prefix}{name}": value for name, value in result.traces.items()}
        logs[f"{self.log_prefix}mean_trainable"] = result.mean_over(trainable)
        if self.writer is not None and state.is_world_process_zero:
            self.writer.log_fisher(rows, step)
        self._log(logs, state)
        return result
