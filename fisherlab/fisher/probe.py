"""FisherProbe: when and on what to measure tr(F) during training, without touching training.

:class:`FisherProbe` decides *what* is measured: it draws up to ``n_batches``
  training batches from its own seeded sampler (a generator seeded from
  ``(seed, step)``, so a measurement is a function of the step and survives
  resumption), moves them to the model's device and calls
  :func:`fisherlab.fisher.trace_fisher` in the requested module mode. It forks the
  RNG, restores every module's train/eval flag and never touches ``.grad``, the
  optimizer or the training data loader, so a run with the probe produces the
  same weights as one without it. Under ``torch.distributed`` each rank measures
  its share of the batches and the per-block traces are all-reduced (weighted by
  the number of examples), so every rank sees the same numbers.

Target-language input sets (:meth:`FisherProbe.add_language`): unlabelled inputs of a
target language, a fixed seeded subset (:mod:`fisherlab.fisher.language_sets`), measured
by :meth:`FisherProbe.measure_language` with the same estimator, mode and DDP handling;
:meth:`FisherProbe.measure_sets` measures the source and every language in one call.
Each set costs about one source measurement.

*When* to measure is the Trainer callback's job
(:class:`fisherlab.hf.FisherProbeCallback`). Measurements at step ``i`` see the weights after ``i`` optimizer steps, before the
forward of step ``i``; they are taken in ``on_step_end`` of step ``i-1`` (before a
checkpoint at step ``i`` is written, so the checkpoint and the run store agree on
resume).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from fisherlab.blocks import BlockMap, BlockMapError
from fisherlab.fisher.language_sets import (
    LABEL_FREE_ESTIMATORS,
    LanguageSet,
    language_seed,
    make_language_set,
)
from fisherlab.fisher.measurement import FisherMeasurement
from fisherlab.fisher.precision import nonfinite_blocks, warn_nonfinite
from fisherlab.torch_utils import (
    cuda_devices,
    dist_info,
    mix_seed,
    model_device,
    preserved_modes,
    to_device,
)

MODES = ("eval", "train", "as_is")


class FisherProbe:
    """Measures tr(F) per block on training batches drawn from its own seeded sampler.

    Args:
        n_batches: at most this many batches per measurement (fewer if the data is smaller).
        estimator: a :data:`fisherlab.fisher.ESTIMATORS` name (``per_example`` by default;
            ``reference`` reproduces the FUN paper's released code).
        seed: seeds the batch draw and the estimator's label sampling, mixed with the step.
        batch_size: examples per batch; None = the trainer's per-device batch size.
        mode: ``"eval"`` (dropout off; default: tr(F) of the deterministic model, as the
            FUN paper's released code, which calls ``model.eval()`` before measuring),
            ``"train"`` (dropout on), ``"as_is"``.
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
        from fisherlab.fisher.estimators import ESTIMATORS
        from fisherlab.fisher.outputs import FisherError

        if estimator not in ESTIMATORS:  # fail at construction, not inside Trainer.train()
            raise FisherError(f"FisherProbe: estimator {estimator!r} is unknown; expected one of {list(ESTIMATORS)}")
        self.n_batches = n_batches
        self.estimator = estimator
        self.seed = int(seed)
        self.batch_size = batch_size
        self.mode = mode
        self.block_names = list(block_names) if block_names is not None else None
        self.dataset: Any = None
        self.collate_fn: Any = None
        self._data_batch_size: int | None = None
        self._cache: tuple[tuple, FisherMeasurement] | None = None
        self._from_trainer = False  # data attached by a callback from the trainer (re-attached per train())
        self.language_sets: dict[str, LanguageSet] = {}
        self._language_cache: dict[tuple, FisherMeasurement] = {}
        # language -> context manager around that language's measurement (e.g. a language-adapter swap)
        self.language_context: Callable[[str], AbstractContextManager] | None = None

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
        gen = torch.Generator().manual_seed(mix_seed(self.seed, step, 0x5EED))
        order = torch.randperm(n, generator=gen).tolist()
        n_batches = min(self.n_batches, math.ceil(n / size))
        return [order[i * size:(i + 1) * size] for i in range(n_batches)]

    def batches(self, step: int, device: torch.device | str | None = None) -> list[Any]:
        """This rank's batches for ``step`` (collated, on ``device``)."""
        rank, world = dist_info()
        mine = [b for i, b in enumerate(self.batch_indices(step)) if i % world == rank]
        out = []
        for idx in mine:
            examples = [self.dataset[j] for j in idx]
            batch = self.collate_fn(examples) if self.collate_fn is not None else \
                torch.utils.data.default_collate(examples)
            if hasattr(batch, "data") and isinstance(batch.data, dict):  # BatchEncoding
                batch = dict(batch.data)
            out.append(to_device(batch, torch.device(device)) if device is not None else batch)
        return out

    # -- measuring ---------------------------------------------------------------------------
    def _names(self, blocks: BlockMap, block_names: Sequence[str] | None) -> list[str]:
        names = list(block_names if block_names is not None else (self.block_names or blocks.names))
        unknown = [n for n in names if n not in blocks]
        if unknown:
            raise BlockMapError(f"FisherProbe: unknown blocks {unknown}; the BlockMap has {blocks.names}")
        return names

    def measure(self, model: torch.nn.Module, blocks: BlockMap, step: int,
                block_names: Sequence[str] | None = None) -> FisherMeasurement:
        """tr(F) per block at ``step`` (cached: a second call for the same step/blocks is free).

        Collective under ``torch.distributed``: every rank must call it.
        """
        names = self._names(blocks, block_names)
        key = (int(step), tuple(names), id(model))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        batches = self.batches(step, model_device(model))
        result = self._measure_batches(model, blocks, names, batches, step, mix_seed(self.seed, step, dist_info()[0]),
                                       len(self.batch_indices(step)))
        self._cache = (key, result)
        return result

    def _measure_batches(self, model: torch.nn.Module, blocks: BlockMap, names: list[str], batches: list[Any],
                         step: int, seed: int, n_batches: int) -> FisherMeasurement:
        """tr(F) per block over this rank's ``batches`` (all-reduced over ranks), modes/RNG/grads untouched."""
        from fisherlab.fisher import trace_fisher

        world = dist_info()[1]
        device = model_device(model)
        with preserved_modes(model), torch.random.fork_rng(devices=cuda_devices(model)):
            if self.mode == "eval":
                model.eval()
            elif self.mode == "train":
                model.train()
            if batches:
                m = trace_fisher(model, batches, blocks=blocks, estimator=self.estimator, seed=seed,
                                 block_names=names)
                traces = {n: float(m.traces[n]) for n in names}
                stderr = {n: float(m.stderr.get(n, math.nan)) for n in names}
                n_ex, meta = int(m.n_examples), dict(m.meta)
            else:  # more ranks than batches: this rank contributes nothing
                traces = {n: 0.0 for n in names}
                stderr = {n: 0.0 for n in names}
                n_ex, meta = 0, {"estimator": self.estimator}
        if world > 1:
            traces, stderr, n_ex = _all_reduce_traces(names, traces, stderr, n_ex, device)
            bad = nonfinite_blocks(traces)  # another rank's overflow reaches every rank's mean
            if bad and not meta.get("nonfinite"):
                warn_nonfinite("FisherProbe", bad, meta.get("precision"))
            meta.pop("nonfinite", None)
            meta.pop("nonfinite_blocks", None)
            if bad:
                meta.update(nonfinite=True, nonfinite_blocks=bad)
        meta.setdefault("estimator", self.estimator)
        meta.update({"probe_mode": self.mode, "world_size": world, "n_batches": n_batches})
        return FisherMeasurement(traces=traces, stderr=stderr, n_examples=n_ex, meta=meta,
                                 layers={n: blocks[n].layer for n in names}, step=int(step))

    # -- target-language input sets ------------------------------------------------------------
    def add_language(self, language: str, dataset: Any, collate_fn: Any = None,
                     n_examples: int | None = None) -> FisherProbe:
        """Also measure on ``language``'s inputs: a fixed subset of ``n_examples`` examples of
        ``dataset`` drawn once from ``(seed, language)`` (None: all of them). Labels in the set
        are removed before measuring (the true Fisher samples y from the model), so the
        estimator must be label-free (not ``empirical``)."""
        if self.estimator not in LABEL_FREE_ESTIMATORS:
            raise ValueError(f"FisherProbe.add_language({language!r}): estimator {self.estimator!r} needs data "
                             f"labels; target-language sets are unlabelled (use one of {LABEL_FREE_ESTIMATORS})")
        self.language_sets[language] = make_language_set(language, dataset, collate_fn, n_examples, self.seed)
        self._language_cache.clear()
        return self

    @property
    def languages(self) -> list[str]:
        """Names of the target-language sets, in the order added."""
        return list(self.language_sets)

    def language_label_seed(self, language: str, step: int, rank: int = 0) -> int:
        """The label-sampling seed of ``language``'s measurement at ``step`` on ``rank``."""
        return mix_seed(language_seed(self.seed, language), step, rank)

    def language_batches(self, language: str, device: torch.device | str | None = None) -> list[Any]:
        """This rank's batches of ``language``'s fixed subset (label fields removed), on ``device``."""
        if language not in self.language_sets:
            raise KeyError(f"FisherProbe: no input set for language {language!r}; sets: {self.languages}")
        size = self.batch_size or self._data_batch_size
        if not size:
            raise ValueError("FisherProbe: batch_size unknown; pass batch_size= (or attach training data first)")
        rank, world = dist_info()
        lang_set = self.language_sets[language]
        out = []
        for i, idx in enumerate(lang_set.batch_indices(size)):
            if i % world == rank:
                batch = lang_set.collate(idx)
                out.append(to_device(batch, torch.device(device)) if device is not None else batch)
        return out

    def measure_language(self, model: torch.nn.Module, blocks: BlockMap, step: int, language: str,
                         block_names: Sequence[str] | None = None) -> FisherMeasurement:
        """tr(F) per block on ``language``'s fixed subset at ``step`` (cached per step and language);
        ``meta["language"]`` names the set. Wrapped in ``language_context(language)`` when set
        (e.g. a MAD-X language-adapter swap). Collective under ``torch.distributed``."""
        names = self._names(blocks, block_names)
        key = (int(step), tuple(names), id(model), language)
        if key in self._language_cache:
            return self._language_cache[key]
        context = self.language_context(language) if self.language_context is not None else nullcontext()
        with context:
            batches = self.language_batches(language, model_device(model))
            size = self.batch_size or self._data_batch_size
            result = self._measure_batches(model, blocks, names, batches, step,
                                           self.language_label_seed(language, step, dist_info()[0]),
                                           len(self.language_sets[language].batch_indices(size)))
        result.meta["language"] = language
        self._language_cache = {k: v for k, v in self._language_cache.items() if k[0] == int(step)}
        self._language_cache[key] = result
        return result

    def measure_sets(self, model: torch.nn.Module, blocks: BlockMap, step: int,
                     block_names: Sequence[str] | None = None,
                     languages: Sequence[str] | None = None) -> dict[str | None, FisherMeasurement]:
        """All input sets at ``step`` in one call: ``None`` -> the source (training) data when
        attached, then each target language (``languages``: a subset; default all)."""
        out: dict[str | None, FisherMeasurement] = {}
        if self.attached:
            out[None] = self.measure(model, blocks, step, block_names)
        for language in (self.languages if languages is None else languages):
            out[language] = self.measure_language(model, blocks, step, language, block_names)
        return out


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


__all__ = ["MODES", "FisherProbe"]
