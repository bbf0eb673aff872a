"""Per-example squared gradient norms per parameter block, from one backward pass.

For a scalar ``s = sum_i s_i`` (one term per example), ``PerExampleGradNorms`` returns
per block ``||d s_i / d theta_block||^2`` for every example ``i``. Forward hooks keep
the input and output of every module that owns a block parameter (in a side
dictionary, never on the module); one ``torch.autograd.grad`` to those outputs gives
``d s / d output``, whose rows belong to single examples; a per-type *sampler* turns
(input, output-gradient) into per-example squared norms with an einsum.

Sequences: the per-example gradient is the sum over tokens (and, for multiple
choice, over the ``g`` consecutive rows of an example) *before* squaring. For a
Linear layer with rows ``r`` of example ``b`` (inputs ``x[b, r, :]``, output
gradients ``d[b, r, :]``) the weight gradient is ``G_b = sum_r d[b, r] x[b, r]^T``:

* materialise: form ``G_b`` ([o, i]) and square it -- cost ``R * i * o`` per example;
* Gram ("ghost norm"): ``||G_b||^2 = sum_{r, r'} (x_r . x_r') (d_r . d_r')`` -- cost
  ``R^2 * (i + o)``; chosen when cheaper.

Supported out of the box: ``nn.Linear``, ``nn.LayerNorm``, ``nn.Embedding`` and the
``adapters`` LoRA module (raw ``lora_A``/``lora_B`` matmuls, dropout and scaling).
Anything else owning block parameters (an unregistered module type, a parameter
shared by several modules, a module applied to a tensor without a per-example
batch dimension such as DeBERTa's relative-position projections) falls back to an
exact per-example loop of vector-Jacobian products from the model's outputs,
with one warning naming the reason. Register more types with ``register_sampler``.

Safety checks, so that a fast path never returns a silently wrong number:

* every autograd use of a sampled parameter in the scalar's graph must lie inside a
  recorded call of its module (found by walking the graph); other uses (DeBERTa reads
  ``rel_embeddings.weight`` directly, DoRA reads ``m.weight``) send it to the loop;
* a call whose leading dimension is neither the batch size nor the number of sequences
  the model received (or whose input is a Parameter) is not per-example: loop;
* inputs/outputs modified in place after the hook ran raise an error. (Reentrant
  gradient checkpointing is refused by torch itself; non-reentrant checkpointing works.)

Limits: examples must not interact in the forward (no batch norm); a batch-shared
tensor whose leading dimension happens to equal the batch size and that is not a
Parameter itself cannot be told apart from a per-example one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fisherlab.blocks import unwrap_model

__all__ = [
    "Call",
    "FallbackWarning",
    "PerExampleGradNorms",
    "Sampler",
    "linear_sq_norms",
    "register_sampler",
    "sampler_for",
]

METHODS = ("auto", "materialise", "gram", "loop")


class FallbackWarning(UserWarning):
    """A block parameter is measured with the slow per-example loop."""


@dataclass
class Call:
    """One recorded forward call of a hooked module.

    ``args``/``kwargs`` are the call's inputs, ``output`` the tensor whose gradient
    the sampler needs, ``extras`` tensors captured from sub-modules during the call
    (e.g. LoRA's dropout output), ``grad`` is ``d scalar / d output`` (None: zero).
    """

    args: tuple
    kwargs: dict
    output: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    grad: Tensor | None = None
    versions: tuple[int, ...] = ()
    claimed: list = field(default_factory=list)   # autograd nodes consuming the module's parameters
    shared: bool = False   # an input is a Parameter: not per-example (e.g. DeBERTa's rel. embeddings)


SamplerFn = Callable[[nn.Module, Sequence[Call], int, str], dict[str, Tensor]]


def _first_tensor_output(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


@dataclass(frozen=True)
class Sampler:
    """How to get per-example squared norms for the parameters of one module type.

    ``fn(module, calls, batch_size, method) -> {local_param_name: Tensor[batch_size]}``
    (method is "auto" | "materialise" | "gram"); ``output`` picks the tensor to
    differentiate from a forward call; ``supports(module)`` returns None or the
    reason this instance cannot be handled; ``capture(module)`` names sub-modules
    whose forward outputs the sampler needs (stored in ``Call.extras``);
    ``expand_shared``: a first input with leading dimension 1 (e.g. BERT's
    ``position_ids`` [1, T]) is expanded to one row per sequence before the call, so
    the output is per-example (same values, same broadcasting downstream).
    """

    fn: SamplerFn
    output: Callable[[nn.Module, tuple, dict, Any], Tensor | None] = _first_tensor_output
    supports: Callable[[nn.Module], str | None] = staticmethod(lambda module: None)
    capture: Callable[[nn.Module], dict[str, nn.Module]] = staticmethod(lambda module: {})
    expand_shared: bool = False


_SAMPLERS: dict[type, Sampler] = {}
_WARNED: set[str] = set()


def register_sampler(
    *module_types: type,
    output: Callable[[nn.Module, tuple, dict, Any], Tensor | None] | None = None,
    supports: Callable[[nn.Module], str | None] | None = None,
    capture: Callable[[nn.Module], dict[str, nn.Module]] | None = None,
    expand_shared: bool = False,
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator registering ``fn`` as the sampler of ``module_types`` (exact types)."""

    def decorate(fn: SamplerFn) -> SamplerFn:
        kwargs: dict[str, Any] = {"expand_shared": expand_shared}
        if output is not None:
            kwargs["output"] = output
        if supports is not None:
            kwargs["supports"] = supports
        if capture is not None:
            kwargs["capture"] = capture
        for module_type in module_types:
            _SAMPLERS[module_type] = Sampler(fn, **kwargs)
        return fn

    return decorate


def sampler_for(module: nn.Module) -> Sampler | None:
    """The registered sampler of ``type(module)`` (exact type, then the MRO)."""
    sampler = _SAMPLERS.get(type(module))
    if sampler is not None:
        return sampler
    for base in type(module).__mro__[1:]:
        # Only plain re-classings of a registered type (e.g. adapters' LoRALinearTorch
        # is an nn.Linear subclass with its own forward, so the MRO is not enough in
        # general): accept a base only if the subclass does not override forward.
        if base in _SAMPLERS and type(module).forward is base.forward:
            return _SAMPLERS[base]
    return None


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, FallbackWarning, stacklevel=3)


# ---------------------------------------------------------------- einsum kernels


def _rows(t: Tensor, batch_size: int, feature_dims: int = 1) -> Tensor:
    """[D, ..., *features] -> [B, R, prod(features)]: rows of an example are consecutive."""
    features = 1
    for size in t.shape[t.dim() - feature_dims:]:
        features *= size
    return t.reshape(batch_size, -1, features)


def linear_sq_norms(x: Tensor, d: Tensor, method: str = "auto") -> Tensor:
    """Per-example ``||sum_r d[b, r] x[b, r]^T||_F^2`` for x [B, R, i], d [B, R, o]."""
    _, rows, n_in = x.shape
    n_out = d.shape[-1]
    if x.dtype in (torch.float16, torch.bfloat16):
        x, d = x.float(), d.float()
    if method == "auto":
        method = "gram" if rows * rows * (n_in + n_out) < rows * n_in * n_out else "materialise"
    if method == "gram":
        return (torch.bmm(x, x.transpose(1, 2)) * torch.bmm(d, d.transpose(1, 2))).sum((1, 2))
    if method == "materialise":
        return torch.bmm(d.transpose(1, 2), x).square().sum((1, 2))
    raise ValueError(f"linear_sq_norms: unknown method {method!r}; expected auto, materialise or gram")


def _bias_sq_norms(d: Tensor) -> Tensor:
    return d.sum(1).square().sum(1)


def _cat_calls(calls: Sequence[Call], batch_size: int, pick: Callable[[Call], Tensor]) -> tuple[Tensor, Tensor]:
    """Inputs and output-gradients of every call of a module, concatenated along rows."""
    xs, ds = [], []
    for call in calls:
        if call.grad is None:
            continue
        xs.append(_rows(pick(call), batch_size))
        ds.append(_rows(call.grad, batch_size))
    if len(xs) == 1:
        return xs[0], ds[0]
    return torch.cat(xs, 1), torch.cat(ds, 1)


def _input(call: Call) -> Tensor:
    return call.args[0] if call.args else next(iter(call.kwargs.values()))


def _live(calls: Sequence[Call]) -> bool:
    return any(call.grad is not None for call in calls)


# ---------------------------------------------------------------- samplers


@register_sampler(nn.Linear)
def _linear_sampler(module: nn.Module, calls: Sequence[Call], batch_size: int, method: str) -> dict[str, Tensor]:
    if not _live(calls):
        return {}
    with torch.no_grad():
        x, d = _cat_calls(calls, batch_size, _input)
        norms = {"weight": linear_sq_norms(x, d, method)}
        if module.bias is not None:
            norms["bias"] = _bias_sq_norms(d)
    return norms


@register_sampler(nn.LayerNorm)
def _layer_norm_sampler(module: nn.LayerNorm, calls: Sequence[Call], batch_size: int, method: str) -> dict[str, Tensor]:
    if not _live(calls) or not module.elementwise_affine:
        return {}
    dims = len(module.normalized_shape)
    with torch.no_grad():
        def normalised(call: Call) -> Tensor:
            return nn.functional.layer_norm(_input(call), module.normalized_shape, None, None, module.eps)

        xs, ds = [], []
        for call in calls:
            if call.grad is None:
                continue
            xs.append(_rows(normalised(call), batch_size, dims))
            ds.append(_rows(call.grad, batch_size, dims))
        x_hat, d = torch.cat(xs, 1), torch.cat(ds, 1)
        norms = {}
        if module.weight is not None:
            norms["weight"] = (x_hat * d).sum(1).square().sum(1)
        if getattr(module, "bias", None) is not None:
            norms["bias"] = _bias_sq_norms(d)
    return norms


def _embedding_supports(module: nn.Module) -> str | None:
    if module.max_norm is not None:
        return "nn.Embedding with max_norm renormalises its weight in place"
    return None


@register_sampler(nn.Embedding, supports=_embedding_supports, expand_shared=True)
def _embedding_sampler(module: nn.Embedding, calls: Sequence[Call], batch_size: int, method: str) -> dict[str, Tensor]:
    """Per example: ``sum_v ||sum_{t: id_t = v} d_t||^2`` (padding_idx rows get no gradient)."""
    if not _live(calls):
        return {}
    with torch.no_grad():
        ids = torch.cat([_input(c).reshape(batch_size, -1) for c in calls if c.grad is not None], 1)
        d = torch.cat([_rows(c.grad, batch_size) for c in calls if c.grad is not None], 1)
        if module.padding_idx is not None:
            d = d.masked_fill((ids == module.padding_idx).unsqueeze(-1), 0)
        if method == "gram":
            same = ids.unsqueeze(2) == ids.unsqueeze(1)
            norms = (torch.bmm(d, d.transpose(1, 2)) * same).sum((1, 2))
        else:
            # Segment-sum the rows of each (example, token id) pair, then square.
            keys = ids + torch.arange(batch_size, device=ids.device).unsqueeze(1) * module.num_embeddings
            unique, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
            summed = d.new_zeros(unique.numel(), d.shape[-1]).index_add_(0, inverse, d.reshape(-1, d.shape[-1]))
            owner = torch.div(unique, module.num_embeddings, rounding_mode="floor")
            norms = d.new_zeros(batch_size).index_add_(0, owner, summed.square().sum(1))
    return {"weight": norms}


# adapters' LoRA: out = dropout(x) @ A^T @ B^T * scaling (composition "add"); registered
# lazily so that importing this module does not import adapters.
def _lora_output(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Tensor | None:
    return output[0] if isinstance(output, tuple) else output


def _lora_supports(module: nn.Module) -> str | None:
    if getattr(module, "use_gating", False):
        return "LoRA with gating (output scaled by a data-dependent gate)"
    if getattr(module, "use_dora", False):
        return "DoRA (magnitude vector used outside the module's forward)"
    if getattr(module, "composition_mode", "add") != "add":
        return f"LoRA composition_mode {module.composition_mode!r}"
    return None


def _lora_capture(module: nn.Module) -> dict[str, nn.Module]:
    dropout = getattr(module, "lora_dropout", None)
    return {"dropped": dropout} if isinstance(dropout, nn.Module) else {}


def _lora_input(call: Call) -> Tensor:
    """The tensor LoRA multiplies by A^T: dropout output if captured, else the input."""
    if "dropped" in call.extras:
        return call.extras["dropped"]
    hidden = call.args[0] if call.args else call.kwargs.get("hidden_states")
    if hidden is None:
        hidden = call.args[1] if len(call.args) > 1 else call.kwargs["layer_input"]
    return hidden


def _lora_sampler(module: nn.Module, calls: Sequence[Call], batch_size: int, method: str) -> dict[str, Tensor]:
    """h = x A^T, u = h B^T, y = s u: grad B = s sum d h^T, grad A = s sum (d B) x^T."""
    if not _live(calls):
        return {}
    with torch.no_grad():
        x, d = _cat_calls(calls, batch_size, _lora_input)
        h = x @ module.lora_A.t()
        d_h = d @ module.lora_B
        square = float(module.scaling) ** 2   # scale the norms, not the [B, R, o] gradient
        return {"lora_A": linear_sq_norms(x, d_h, method) * square, "lora_B": linear_sq_norms(h, d, method) * square}


def _lora_linear_supports(module: nn.Module) -> str | None:
    # Base weight/bias of a LoRA-wrapped Linear: the LoRA branch is *added* to the base
    # output, so d s / d(base output) = d s / d(module output) -- except for DoRA.
    if any(getattr(lora, "use_dora", False) for lora in getattr(module, "loras", {}).values()):
        return "DoRA rescales the base output"
    return None


def _register_adapters() -> None:
    try:
        from adapters.methods.lora import LoRA, LoRALinearTorch
    except ImportError:  # adapters not installed: nothing to register
        return
    if LoRA not in _SAMPLERS:
        register_sampler(LoRA, output=_lora_output, supports=_lora_supports, capture=_lora_capture)(_lora_sampler)
    if LoRALinearTorch not in _SAMPLERS:
        register_sampler(LoRALinearTorch, supports=_lora_linear_supports)(_linear_sampler)


# ---------------------------------------------------------------- the engine


def _walk_modules(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every module under ``root``, repeats of shared modules included
    (``named_modules(remove_duplicate=False)`` without its recursive generators)."""
    found, stack = [], [("", root)]
    while stack:
        prefix, module = stack.pop()
        found.append((prefix, module))
        for name, child in reversed(module._modules.items()):
            if child is not None:
                stack.append((f"{prefix}.{name}" if prefix else name, child))
    return found


def _resolve_blocks(blocks: Any, block_names: Sequence[str] | None,
                    named: Mapping[str, nn.Parameter]) -> dict[str, dict[str, nn.Parameter]]:
    """{block: {param name: Parameter}} from a BlockMap or a mapping block -> param names."""
    names = list(block_names) if block_names is not None else list(getattr(blocks, "names", None) or list(blocks))
    resolved = {}
    for name in names:
        if name not in blocks:
            raise ValueError(f"PerExampleGradNorms: unknown block {name!r}; blocks are {list(blocks)}")
        spec = blocks[name]
        params = {}
        for pname in getattr(spec, "param_names", spec):
            if pname not in named:
                raise ValueError(f"PerExampleGradNorms: block {name!r} names parameter {pname!r}, "
                                 "which the model does not have")
            params[pname] = named[pname]
        resolved[name] = params
    return resolved


def _walk_tensors(obj: Any, out: list[Tensor]) -> None:
    if isinstance(obj, Tensor):
        out.append(obj)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            _walk_tensors(value, out)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            _walk_tensors(value, out)


_WALK_BUDGET = 10_000


def _parameter_uses(root: Any, params: set[int], stop: set[int] = frozenset(),
                    budget: int | None = None) -> dict[int, list]:
    """{id(param): autograd nodes consuming it} in the graph above ``root`` (a grad_fn),
    not walking past nodes in ``stop``, visiting at most ``budget`` nodes when given."""
    found: dict[int, list] = {}
    seen, stack = set(), [root]
    while stack and (budget is None or len(seen) < budget):
        node = stack.pop()
        if node is None or id(node) in seen or id(node) in stop:
            continue
        seen.add(id(node))
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            variable = getattr(nxt, "variable", None)
            if variable is not None:
                if id(variable) in params:
                    found.setdefault(id(variable), []).append(node)
            else:
                stack.append(nxt)
    return found


def _claimed_nodes(output: Tensor, inputs: Sequence[Any], params: set[int]) -> list:
    """Autograd nodes of one module call that consume the module's parameters.

    Walks from ``output.grad_fn`` back to the call's inputs; used to check later that
    every use of a sampled parameter in the scalar's graph happened inside a hooked call.
    """
    stop = {id(t.grad_fn) for t in inputs if isinstance(t, Tensor) and t.grad_fn is not None}
    uses = _parameter_uses(output.grad_fn, params, stop, _WALK_BUDGET)
    return [node for nodes in uses.values() for node in nodes]


def _consumers(scalar: Tensor, params: set[int]) -> dict[int, list]:
    """{id(param): autograd nodes consuming it} over the whole graph of ``scalar``."""
    return _parameter_uses(scalar.grad_fn, params)


def _drop_ancestors(pairs: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """Keep only outputs that no other output depends on (e.g. drop hidden_states when the
    logits are there too): their total derivatives would count the same path twice."""
    nodes = {id(t.grad_fn): t for t, _ in pairs if t.grad_fn is not None}
    ancestors: set[int] = set()
    for t, _ in pairs:
        seen, stack = set(), [fn for fn, _ in t.grad_fn.next_functions] if t.grad_fn is not None else []
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in nodes:
                ancestors.add(id(node))
            stack.extend(fn for fn, _ in node.next_functions)
    return [(t, g) for t, g in pairs if id(t.grad_fn) not in ancestors]


def _example_rows(t: Tensor, batch_size: int, example: int) -> slice:
    per = t.shape[0] // batch_size
    return slice(example * per, (example + 1) * per)


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
        _register_adapters()
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
                _warn_once(f"shared:{pid}", f"PerExampleGradNorms: a block parameter is owned by "
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
                _warn_once(f"type:{kind}:{reason}", f"PerExampleGradNorms: {kind} ({reason}); its block "
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
                _warn_once(f"rows:{type(module).__qualname__}", f"PerExampleGradNorms: {mname!r} "
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
                _warn_once(f"outside:{names}", f"PerExampleGradNorms: {names} used outside the forward of "
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
        for module, sampler, locals_, calls in sampled:
            norms = sampler.fn(module, calls, batch_size, self.method)
            for local, pid in locals_.items():
                if local in norms:
                    result[self._param_block[pid]] += norms[local].to(torch.float64)
            for call in calls:
                call.grad = None
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

