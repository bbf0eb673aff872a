"""Per-block estimators of tr(F), the trace of the Fisher information (docs/estimators.md).

``tr(F)_block = E_x E_{y ~ p(y|x)} ||grad_block log p(y|x)||^2``, averaged over the
examples of the given batches. Five estimators (``ESTIMATORS``):

* ``per_example`` (default): one label per example sampled from the model with a
  ``torch.Generator`` seeded with ``seed``; per-example squared gradient norms.
* ``exact``: the expectation over labels, ``sum_c p_c ||grad log p(c)||^2`` computed as
  ``sum_k ||J^T s_k||^2`` over the ``C-1`` columns of ``S S^T = diag(p) - p p^T``
  (one backward per column, per independent row slot: QA start and end separately,
  token-level kinds once per token position).
* ``batch``: sampled labels, ``||grad sum_i log p(y_i|x_i)||^2 / B``.
* ``empirical``: the data labels of the batch, per example (the empirical Fisher).
* ``reference``: argmax labels, ``||grad mean_i loss_i||^2 / B`` -- the FUN paper's code.

Per-example norms come from :class:`fisherlab.fisher.persample.PerExampleGradNorms`;
``batch``/``reference`` call ``torch.autograd.grad`` on the block parameters. Nothing
touches ``.grad``; ``requires_grad`` flags, module modes and the global/CUDA RNG states
are restored; the model's parameters are never copied. Sums accumulate in float64.

Wrappers (``torch.compile``, DDP, DataParallel, ...) are looked through: the bare model
runs eagerly, outside DDP's gradient hooks. The forward keeps the precision it has
(``torch.autocast`` around the call, or a Trainer's ``bf16``/``fp16`` autocast on the
model's ``forward``); ``meta["precision"]`` records it (:mod:`fisherlab.fisher.precision`)
and per-example squared norms are accumulated in float32 or wider regardless. A
non-finite trace warns (:class:`~fisherlab.fisher.precision.NonFiniteWarning`) and sets
``meta["nonfinite"]``/``meta["nonfinite_blocks"]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor

from fisherlab.blocks import BlockMap, BlockMapError, as_block_map
from fisherlab.fisher.measurement import FisherMeasurement
from fisherlab.fisher.outputs import (
    FisherError,
    OutputKind,
    forward_by_name,
    get_output,
    infer_output,
)
from fisherlab.fisher.precision import PrecisionRecorder, nonfinite_blocks, warn_nonfinite
from fisherlab.spec.estimators import ESTIMATORS  # the one list of estimator names (torch-free)
from fisherlab.torch_utils import (
    check_autograd_grad_ok,
    cuda_devices,
    model_inputs,
    preserved_modes,
    unwrap_model,
)

LABELS = {"per_example": "sampled", "exact": "expectation", "batch": "sampled",
          "empirical": "data", "reference": "argmax"}
PER_EXAMPLE_ESTIMATORS = ("per_example", "exact", "empirical")
DEFAULT_MAX_BACKWARDS = 4096


@contextmanager
def _uncompiled(model: torch.nn.Module) -> Iterator[None]:
    """Run a module compiled in place (``module.compile()``) eagerly for the body: the
    per-example hooks record Python objects, which a compiled graph cannot."""
    compiled = [(m, m._compiled_call_impl) for m in model.modules()
                if getattr(m, "_compiled_call_impl", None) is not None]
    for m, _ in compiled:
        m._compiled_call_impl = None
    try:
        yield
    finally:
        for m, impl in compiled:
            m._compiled_call_impl = impl


def _attn_implementation(model: torch.nn.Module) -> str | None:
    config = getattr(unwrap_model(model), "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
def _resolve_blocks(model, blocks, block_names, adapter) -> tuple[BlockMap, list[str], dict[str, list]]:
    try:
        if blocks is None and adapter is None:
            adapter = active_task_module(model)
        block_map = as_block_map(blocks, model, adapter=adapter)
        names = list(block_map.names if block_names is None else block_names)
        unknown = [n for n in names if n not in block_map]
        if unknown:
            raise FisherError(f"trace_fisher: unknown block(s) {unknown}; the block map has {block_map.names}")
        if not names:
            raise FisherError("trace_fisher: no blocks to measure (block_names is empty)")
        params = {n: list(block_map.parameters(model, n).values()) for n in names}
    except BlockMapError as err:
        raise FisherError(f"trace_fisher: {err}") from err
    empty = [n for n, ps in params.items() if not ps]
    if empty:
        raise FisherError(f"trace_fisher: block(s) {empty} have no parameters")
    floating = [n for n, ps in params.items() if not all(p.is_floating_point() for p in ps)]
    if floating:
        raise FisherError(f"trace_fisher: block(s) {floating} hold non-floating-point parameters")
    return block_map, names, params


def active_task_module(model: torch.nn.Module) -> str | None:
    """The task module of an adapters model (DDP/DataParallel wrappers looked through): the
    active adapter named like the active head (the adapters convention), else the last
    adapter of the active setup; None without one."""
    model = unwrap_model(model)
    active = getattr(model, "active_adapters", None)
    if active is None:
        return None
    flat = active.flatten() if hasattr(active, "flatten") else [active]
    flat = [name for name in flat if isinstance(name, str)]
    head = getattr(model, "active_head", None)
    if isinstance(head, str) and head in flat:
        return head
    return flat[-1] if flat else None


def _prepare_batch(batch: Any, index: int, device: torch.device) -> dict[str, Any]:
    if not isinstance(batch, Mapping):
        raise FisherError(f"trace_fisher: batch {index} is a {type(batch).__name__}; expected a dict of tensors "
                          "as the model accepts them")
    if not any(isinstance(v, Tensor) for v in batch.values()):
        raise FisherError(f"trace_fisher: batch {index} has no tensors (keys {sorted(batch)})")
    moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
    first = next(v for v in moved.values() if isinstance(v, Tensor))
    if first.dim() == 0 or first.shape[0] == 0:
        raise FisherError(f"trace_fisher: batch {index} is empty (field shapes "
                          f"{ {k: tuple(v.shape) for k, v in moved.items() if isinstance(v, Tensor)} })")
    return moved


def _forward(model: torch.nn.Module, batch: Mapping[str, Any]) -> Any:
    return forward_by_name(model, model_inputs(batch), FisherError, "trace_fisher")


# --------------------------------------------------------------------------------------
# the per-batch computations
# --------------------------------------------------------------------------------------
def _row_slots(example: Tensor, size: int) -> Tensor:
    """Rank of every row among the rows of its example (0, 1, ...), rows in any order."""
    order = torch.sort(example, stable=True).indices
    counts = torch.bincount(example, minlength=size)
    starts = counts.cumsum(0) - counts
    ranks = torch.empty_like(example)
    ranks[order] = torch.arange(example.numel(), device=example.device) - starts[example[order]]
    return ranks


def _exact_plan(kind: OutputKind, outputs: Any, batch: Mapping[str, Any], size: int,
                max_backwards: int) -> list[tuple[Tensor, Tensor, Tensor, int]]:
    """``(logits, S, slots, n_slots)`` per factor; raises when it needs too many backwards."""
    plan, cost = [], 0
    for factor in kind.factors(outputs, batch):
        n_rows, n_classes = factor.logits.shape
        if n_rows == 0 or n_classes < 2:
            continue
        slots = _row_slots(factor.example, size)
        n_slots = int(slots.max()) + 1
        cost += n_slots * (n_classes - 1)
        plan.append((factor, slots, n_slots, n_classes))
    if cost > max_backwards:
        detail = ", ".join(f"{f.name}: {s} row slot(s) x {c - 1}" for f, _, s, c in plan)
        raise FisherError(f"estimator 'exact' on output {kind.name!r} needs {cost} backward passes per batch "
                          f"({detail}), more than max_backwards={max_backwards}; use 'per_example' (unbiased, "
                          "one backward) or raise max_backwards")
    return [(f.logits, kind.sqrt_covariance(f), slots, n_slots) for f, slots, n_slots, _ in plan]


def _exact_batch(engine: Any, kind: OutputKind, outputs: Any, batch: Mapping[str, Any], size: int,
                 max_backwards: int, names: Sequence[str]) -> dict[str, Tensor]:
    """Per example ``sum_rows sum_k ||J_row^T s_{row,k}||^2``: rows of one example are independent
    categoricals, so each backward takes at most one row per example (a "slot")."""
    plan = _exact_plan(kind, outputs, batch, size, max_backwards)
    total = {name: torch.zeros(size, dtype=torch.float64) for name in names}
    for logits, sqrt_cov, slots, n_slots in plan:
        for slot in range(n_slots):
            rows = slots == slot
            z, s = logits[rows], sqrt_cov[rows]
            for k in range(s.shape[-1]):
                column = s[:, :, k]
                if not bool(column.any()):
                    continue  # deterministic rows: zero covariance direction
                norms = engine.sq_norms((z * column).sum(), size, retain_graph=True)
                for name in names:
                    total[name] += norms[name].detach().to("cpu", torch.float64)
    return total


def _batch_sq_norms(scalar: Tensor, params: dict[str, list[Tensor]]) -> dict[str, float]:
    flat = [p for ps in params.values() for p in ps]
    grads = torch.autograd.grad(scalar, flat, allow_unused=True)
    out, i = {}, 0
    for name, ps in params.items():
        value = torch.zeros((), dtype=torch.float64)
        for grad in grads[i:i + len(ps)]:
            if grad is not None:
                value += grad.detach().double().pow(2).sum().cpu()
        out[name] = float(value)
        i += len(ps)
    return out


def _labels(kind: OutputKind, estimator: str, outputs: Any, batch: Mapping[str, Any],
            generator: torch.Generator) -> list[Tensor]:
    if LABELS[estimator] == "sampled":
        return kind.sample(outputs, batch, generator)
    if LABELS[estimator] == "argmax":
        return kind.argmax(outputs, batch)
    return kind.data_labels(outputs, batch)


def _mean_stderr(values: Tensor, weights: Tensor | None = None) -> tuple[float, float]:
    """Mean and standard error of ``values`` (NaN stderr for a single value)."""
    n = values.numel()
    mean = float(values.mean()) if weights is None else float((values * weights).sum() / weights.sum())
    if n < 2:
        return mean, math.nan
    return mean, float(values.std(unbiased=True) / math.sqrt(n))


# --------------------------------------------------------------------------------------
# the public entry point
# --------------------------------------------------------------------------------------
def trace_fisher(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    blocks: BlockMap | Mapping[str, Sequence[str]] | None = None,
    estimator: str = "per_example",
    seed: int = 0,
    output: str | OutputKind | None = None,
    block_names: Sequence[str] | None = None,
    *,
    adapter: str | None = None,
    progress: bool = False,
    max_backwards: int = DEFAULT_MAX_BACKWARDS,
    method: str = "auto",
) -> FisherMeasurement:
    """Estimate tr(F) per block over ``batches`` (see module docstring for the estimators).

    ``blocks``: a BlockMap, a ``{block: [parameter names]}`` mapping, or None (discovered
    for ``adapter``, by default the active adapter named like the active head, else the last
    adapter of the active setup; whole layers without adapters). ``output``:
    an output kind name (``classification``, ``multiple_choice``, ``qa``, ``tagging``,
    ``mlm``) or None to infer it from the model. ``seed`` seeds the label sampler
    (``per_example``/``batch``). ``max_backwards`` bounds the backward passes per batch of
    ``exact``. ``method`` is passed to the per-example engine. Frozen blocks are measured
    too; the model's grads, flags, modes and RNG states are left as found.
    """
    if estimator not in ESTIMATORS:
        raise FisherError(f"trace_fisher: unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    if isinstance(batches, Mapping) or isinstance(batches, Tensor):
        raise FisherError("trace_fisher: batches must be an iterable of batch dicts; wrap a single batch in a list")
    kind = get_output(output) if output is not None else None
    model = unwrap_model(model)  # torch.compile / DDP wrappers: measure the bare module, eagerly
    block_map, names, params = _resolve_blocks(model, blocks, block_names, adapter)
    trainable = {n: all(p.requires_grad for p in params[n]) for n in names}
    if model.training:  # HF checkpointing runs in train mode only
        check_autograd_grad_ok(model, "trace_fisher", FisherError)
    first_param = params[names[0]][0]
    device = first_param.device
    meta: dict[str, Any] = {
        "estimator": estimator, "labels": LABELS[estimator], "seed": seed,
        "attn_implementation": _attn_implementation(model),
        "mode": "train" if model.training else "eval",
        "dtype": str(first_param.dtype).replace("torch.", ""),
        "device": str(device), "block_mode": block_map.mode, "task_module": block_map.task_name,
    }
    generator = torch.Generator(device="cpu").manual_seed(seed)
    per_example: dict[str, list[Tensor]] = {n: [] for n in names}
    per_batch: dict[str, list[float]] = {n: [] for n in names}
    sizes: list[int] = []

    with ExitStack() as stack:
        iterator: Iterable[Any] = batches
        if progress:
            from tqdm.auto import tqdm
            iterator = stack.enter_context(tqdm(batches, desc=f"tr(F) [{estimator}]", unit="batch"))
        stack.enter_context(preserved_modes(model, requires_grad=True))
        stack.enter_context(_uncompiled(model))
        stack.enter_context(torch.random.fork_rng(devices=cuda_devices(model)))
        stack.enter_context(torch.enable_grad())
        recorder = stack.enter_context(PrecisionRecorder(model))
        engine = None
        if estimator in PER_EXAMPLE_ESTIMATORS:
            from fisherlab.fisher.persample import PerExampleGradNorms
            engine = stack.enter_context(PerExampleGradNorms(model, block_map, names, method=method))
        else:
            for ps in params.values():
                for p in ps:
                    p.requires_grad_(True)
        for index, raw in enumerate(iterator):
            batch = _prepare_batch(raw, index, device)
            outputs = _forward(model, batch)
            if kind is None:
                kind = infer_output(unwrap_model(model), outputs, batch)
            size = kind.batch_size(outputs)
            if engine is not None:
                if estimator == "exact":
                    values = _exact_batch(engine, kind, outputs, batch, size, max_backwards, names)
                else:
                    labels = _labels(kind, estimator, outputs, batch, generator)
                    scalar = kind.log_prob(outputs, batch, labels).sum()
                    norms = engine.sq_norms(scalar, size)
                    values = {n: norms[n].detach().to("cpu", torch.float64) for n in names}
                engine.clear()
                for n in names:
                    per_example[n].append(values[n])
            else:
                labels = _labels(kind, estimator, outputs, batch, generator)
                logp = kind.log_prob(outputs, batch, labels)
                if estimator == "batch":
                    norms = _batch_sq_norms(logp.sum(), params)
                else:  # reference: the mean loss over the batch, as the released FUN code
                    norms = _batch_sq_norms(-logp.mean(), params)
                for n in names:
                    per_batch[n].append(norms[n] / size)
            sizes.append(size)
            del outputs
    if not sizes:
        raise FisherError("trace_fisher: no batches were given (the iterable was empty)")

    traces: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for n in names:
        if estimator in PER_EXAMPLE_ESTIMATORS:
            traces[n], stderr[n] = _mean_stderr(torch.cat(per_example[n]))
        else:
            values = torch.tensor(per_batch[n], dtype=torch.float64)
            weights = torch.tensor(sizes, dtype=torch.float64) if estimator == "batch" else None
            traces[n], stderr[n] = _mean_stderr(values, weights)
    meta.update(output=kind.name if kind is not None else None, n_batches=len(sizes),
                precision=recorder.precision)
    bad = nonfinite_blocks(traces)
    if bad:
        meta.update(nonfinite=True, nonfinite_blocks=bad)
        warn_nonfinite("trace_fisher", bad, recorder.precision)
    zero = [n for n in names if traces[n] == 0.0]
    if zero:
        meta["zero_blocks"] = zero
        warnings.warn(f"trace_fisher: tr(F) is exactly 0 for block(s) {zero}: their parameters do not "
                      "influence the outputs (an inactive adapter or head?)", stacklevel=2)
    layers = {n: block_map[n].layer for n in names}
    return FisherMeasurement(traces, stderr, sum(sizes), meta, layers, trainable)


__all__ = ["ESTIMATORS", "FisherError", "FisherMeasurement", "LABELS", "trace_fisher"]
