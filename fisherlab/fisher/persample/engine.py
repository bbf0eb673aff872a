"""The engine: :class:`PerExampleGradNorms` (hooks, planning, one backward, the loop fallback)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fisherlab.fisher.persample import embedding, linear, norm  # noqa: F401  (register the built-in samplers)
from fisherlab.fisher.persample.graph import (
    _claimed_nodes,
    _consumers,
    _drop_ancestors,
    _example_rows,
    _resolve_blocks,
    _walk_modules,
    _walk_tensors,
)
from fisherlab.fisher.persample.lora import register_adapters
from fisherlab.fisher.persample.registry import Call, Sampler, sampler_for, warn_once
from fisherlab.torch_utils import unwrap_model

METHODS = ("auto", "materialise", "gram", "loop")


class PerExampleGradNorms:
    """Context manager measuring per-example squared gradient norms per block.

    >>> with PerExampleGradNorms(model, blocks) as probe:
    ...     out = model(**batch)
    ...     norms = probe.sq_norms(log_probs.sum(), batch_size=B)   # {block: float64 [B]}

    ``method``: "auto" (cheaper of materialise / Gram per layer), "materialise",
    "gram", or "loop" (the exact per-example fallback for everything; for tests).
    While active, every block parameter requires grad (frozen blocks are measured
    too); flags are restored exactly on exit. Nothing is written to ``.grad``.
    """

    def __init__(self, model: nn.Module, blocks: Any, block_names: Sequence[str] | None = None,
                 method: str = "auto") -> None:
        if method not in METHODS:
            raise ValueError(f"PerExampleGradNorms: unknown method {method!r}; expected one of {METHODS}")
        self.model = model
        self.method = method
        # One walk over the modules gives names (aliases of tied parameters included) and owners.
        walk = _walk_modules(unwrap_model(model))
        named: dict[str, nn.Parameter] = {}
        for mname, module in walk:
            for local, param in module._parameters.items():
                if param is not None:
                    named.setdefault(f"{mname}.{local}" if mname else local, param)
        self.blocks = _resolve_blocks(blocks, block_names, named)
        self._handles: list[Any] = []
        self._flags: list[tuple[nn.Parameter, bool]] = []
        self._records: dict[int, list[Call]] = {}
        self._in_grad = False
        self._pending: dict[int, dict[str, Tensor]] = {}
        self._model_outputs: list[Tensor] = []
        self._model_rows: int | None = None
        self._entered = False
        self._plan(walk)

    # -------------------------------------------------------------- planning

    def _plan(self, walk: list[tuple[str, nn.Module]]) -> None:
        """Which module samples which parameter; the rest goes to the loop."""
        register_adapters()
        self._param_block: dict[int, str] = {}
        self._params: dict[int, nn.Parameter] = {}
        for block, params in self.blocks.items():
            for pname, param in params.items():
                if id(param) in self._param_block and self._param_block[id(param)] != block:
                    raise ValueError(f"PerExampleGradNorms: parameter {pname!r} is in blocks "
                                     f"{self._param_block[id(param)]!r} and {block!r}")
                self._param_block[id(param)] = block
                self._params[id(param)] = param
        owners: dict[int, list[tuple[str, nn.Module, str]]] = {pid: [] for pid in self._params}
        for mname, module in walk:
            for local, param in module._parameters.items():
                if param is not None and id(param) in owners:
                    owners[id(param)].append((mname, module, local))
        self._modules: dict[int, tuple[str, nn.Module, Sampler, dict[str, int]]] = {}
        self._loop: set[int] = set()
        for pid, found in owners.items():
            unique = {id(module): (mname, module, local) for mname, module, local in found}
            if self.method == "loop":
                self._loop.add(pid)
                continue
            if len(unique) != 1:
                self._loop.add(pid)
                warn_once(f"shared:{pid}", f"PerExampleGradNorms: a block parameter is owned by "
                           f"{len(unique)} modules ({sorted(m for m, _, _ in found)}); measured with the per-example loop")
                continue
            mname, module, local = next(iter(unique.values()))
            sampler = sampler_for(module)
            reason = None if sampler is not None else "no sampler registered"
            if sampler is not None:
                reason = sampler.supports(module)
            if reason is not None:
                self._loop.add(pid)
                kind = f"{type(module).__module__}.{type(module).__qualname__}"
                warn_once(f"type:{kind}:{reason}", f"PerExampleGradNorms: {kind} ({reason}); its block "
                           f"parameters are measured with the slow per-example loop")
                continue
            entry = self._modules.setdefault(id(module), (mname, module, sampler, {}))
            entry[3][local] = pid

    # -------------------------------------------------------------- context

    def __enter__(self) -> PerExampleGradNorms:
        if self._entered:
            raise RuntimeError("PerExampleGradNorms is not re-entrant")
        try:
            for param in self._params.values():
                self._flags.append((param, param.requires_grad))
                param.requires_grad_(True)
            self._handles.append(self.model.register_forward_pre_hook(self._model_pre_hook, with_kwargs=True))
            self._handles.append(self.model.register_forward_hook(self._model_hook, with_kwargs=True))
            for mid, (_, module, sampler, _) in self._modules.items():
                for key, sub in sampler.capture(module).items():
                    self._handles.append(sub.register_forward_hook(self._capture_hook(mid, key)))
                if sampler.expand_shared:
                    self._handles.append(module.register_forward_pre_hook(self._expand_hook))
                self._handles.append(module.register_forward_hook(self._module_hook(mid, sampler), with_kwargs=True))
        except BaseException:
            self._restore()
            raise
        self._entered = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for param, flag in self._flags:
            param.requires_grad_(flag)
        self._flags.clear()
        self.clear()
        self._entered = False

    def clear(self) -> None:
        """Drop every recorded activation (call between batches)."""
        self._records.clear()
        self._pending.clear()
        self._model_outputs.clear()
        self._model_rows = None

    # -------------------------------------------------------------- hooks

    def _model_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # Number of sequences the model sees (B, or B * n_choices for multiple choice).
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            value = kwargs.get(key)
            if isinstance(value, Tensor) and value.dim() >= 2:
                self._model_rows = int(value.shape[:-1].numel())
                return
        embeds = kwargs.get("inputs_embeds")
        if isinstance(embeds, Tensor) and embeds.dim() >= 3:
            self._model_rows = int(embeds.shape[:-2].numel())
            return
        if args and isinstance(args[0], Tensor) and args[0].dim() >= 2 and not args[0].is_floating_point():
            self._model_rows = int(args[0].shape[:-1].numel())

    def _expand_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        rows = self._model_rows
        if rows and rows > 1 and args and isinstance(args[0], Tensor) and args[0].dim() >= 2 and args[0].shape[0] == 1:
            return (args[0].expand(rows, *args[0].shape[1:]), *args[1:])
        return None

    def _model_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        found: list[Tensor] = []
        _walk_tensors(output, found)
        self._model_outputs.extend(t for t in found if t.requires_grad and t.dim() >= 1)

    def _capture_hook(self, mid: int, key: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if isinstance(output, Tensor):
                self._pending.setdefault(mid, {})[key] = output

        return hook

    def _module_hook(self, mid: int, sampler: Sampler) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            extras = self._pending.pop(mid, {})
            if self._in_grad:   # recomputation inside our own autograd.grad (checkpointing)
                return
            if not torch.is_grad_enabled():   # not in any graph: its gradient is zero
                return
            target = sampler.output(module, args, kwargs, output)
            if target is None or not target.requires_grad:
                return
            inputs = (*args, *kwargs.values())
            versions = tuple(t._version for t in (*inputs, target, *extras.values()) if isinstance(t, Tensor))
            shared = any(isinstance(t, nn.Parameter) for t in inputs)
            claimed = _claimed_nodes(target, inputs, set(self._modules[mid][3].values()))
            self._records.setdefault(mid, []).append(
                Call(args, dict(kwargs), target, extras, None, versions, claimed, shared))

        return hook

    # -------------------------------------------------------------- measurement

    def sq_norms(self, scalar: Tensor, batch_size: int, retain_graph: bool = False) -> dict[str, Tensor]:
        """Per block a float64 Tensor[batch_size] of ``||d s_i / d theta_block||^2``.

        ``scalar`` is ``sum_i s_i``; rows of recorded tensors are grouped
        consecutively per example (``rows / batch_size`` rows each). One
        ``torch.autograd.grad`` to the recorded outputs; with ``retain_graph=False``
        the recorded activations are dropped afterwards (the graph is gone anyway).
        """
        if not self._entered:
            raise RuntimeError("PerExampleGradNorms.sq_norms: use inside `with PerExampleGradNorms(...)`")
        if scalar.numel() != 1:
            raise ValueError(f"sq_norms: scalar must have one element, got shape {tuple(scalar.shape)}")
        if not scalar.requires_grad:
            raise ValueError("sq_norms: scalar does not require grad (was the forward run under torch.no_grad?)")
        if batch_size < 1:
            raise ValueError(f"sq_norms: batch_size must be >= 1, got {batch_size}")
        valid_rows = {batch_size}
        if self._model_rows is not None:
            if self._model_rows % batch_size:
                raise ValueError(f"sq_norms: the model saw {self._model_rows} sequences, not a multiple of "
                                 f"batch_size={batch_size}")
            valid_rows.add(self._model_rows)

        loop = set(self._loop)
        sampled: list[tuple[nn.Module, Sampler, dict[str, int], list[Call]]] = []
        for mid, (mname, module, sampler, locals_) in self._modules.items():
            calls = self._records.get(mid, [])
            for call in calls:
                now = tuple(t._version for t in (*call.args, *call.kwargs.values(), call.output, *call.extras.values())
                            if isinstance(t, Tensor))
                if now != call.versions:
                    raise RuntimeError(f"sq_norms: the input or output of {mname!r} was modified in place after "
                                       f"its forward; per-example norms would be wrong")
            if any(call.shared or call.output.shape[0] not in valid_rows for call in calls):
                # e.g. DeBERTa's position projections: applied to a tensor shared by the batch.
                warn_once(f"rows:{type(module).__qualname__}", f"PerExampleGradNorms: {mname!r} "
                           f"({type(module).__qualname__}) ran on a tensor without a per-example leading "
                           f"dimension; its parameters are measured with the per-example loop")
                loop.update(locals_.values())
                continue
            sampled.append((module, sampler, locals_, list(calls)))
        # Every use of a sampled parameter in the scalar's graph must sit inside a hooked
        # call (DeBERTa reads rel_embeddings.weight directly, DoRA reads m.weight, ...).
        tracked = {pid for _, _, locals_, _ in sampled for pid in locals_.values()}
        if tracked:
            consumers = _consumers(scalar, tracked)
            claimed = {id(node) for _, _, _, calls in sampled for call in calls for node in call.claimed}
            outside = {pid for pid, nodes in consumers.items() if any(id(n) not in claimed for n in nodes)}
            if outside:
                names = self._names_of(outside)
                warn_once(f"outside:{names}", f"PerExampleGradNorms: {names} used outside the forward of "
                           f"the module owning them; measured with the per-example loop")
                loop.update(outside)
                kept = []
                for module, sampler, locals_, calls in sampled:
                    locals_ = {k: v for k, v in locals_.items() if v not in outside}
                    if locals_:
                        kept.append((module, sampler, locals_, calls))
                sampled = kept

        targets = [call.output for _, _, _, calls in sampled for call in calls]
        frontier: list[Tensor] = []
        if loop:
            frontier = [t for t in self._model_outputs if t.shape[0] in valid_rows]
            if not frontier:
                raise RuntimeError("sq_norms: parameters need the per-example loop but the model's forward "
                                   "returned no tensor with a per-example leading dimension")
        self._in_grad = True
        try:
            grads = torch.autograd.grad(scalar, targets + frontier, retain_graph=retain_graph or bool(loop),
                                        allow_unused=True) if targets or frontier else ()
        finally:
            self._in_grad = False
        result = {block: torch.zeros(batch_size, dtype=torch.float64, device=scalar.device) for block in self.blocks}
        for call, grad in zip((c for _, _, _, calls in sampled for c in calls), grads[:len(targets)], strict=True):
            call.grad = grad
        # the samplers' own products run in float32 or wider even inside torch.autocast
        with torch.autocast(scalar.device.type, enabled=False):
            self._sample(sampled, batch_size, result)
        if loop:
            self._in_grad = True
            try:
                self._loop_norms(frontier, list(grads[len(targets):]), [self._params[pid] for pid in loop],
                                 batch_size, retain_graph, result)
            finally:
                self._in_grad = False
        if not retain_graph:
            self.clear()
        return result

    def _sample(self, sampled: list, batch_size: int, result: dict[str, Tensor]) -> None:
        for module, sampler, locals_, calls in sampled:
            norms = sampler.fn(module, calls, batch_size, self.method)
            for local, pid in locals_.items():
                if local in norms:
                    result[self._param_block[pid]] += norms[local].to(torch.float64)
            for call in calls:
                call.grad = None

    def _names_of(self, pids: set[int]) -> list[str]:
        return sorted(name for params in self.blocks.values() for name, p in params.items() if id(p) in pids)

    def _loop_norms(self, frontier: list[Tensor], grads: list[Tensor | None], params: list[nn.Parameter],
                    batch_size: int, retain_graph: bool, result: dict[str, Tensor]) -> None:
        """Exact per-example gradients by one vector-Jacobian product per example."""
        live = [(t, g) for t, g in zip(frontier, grads, strict=True) if g is not None]
        live = _drop_ancestors(live)
        if not live:
            return
        outputs = [t for t, _ in live]
        for example in range(batch_size):
            vectors = []
            for t, g in live:
                v = torch.zeros_like(g)
                rows = _example_rows(t, batch_size, example)
                v[rows] = g[rows]
                vectors.append(v)
            keep = retain_graph or example < batch_size - 1
            per_param = torch.autograd.grad(outputs, params, vectors, retain_graph=keep, allow_unused=True)
            for param, grad in zip(params, per_param, strict=True):
                if grad is not None:
                    result[self._param_block[id(param)]][example] += grad.double().square().sum()


__all__ = ["METHODS", "PerExampleGradNorms"]
