"""Walking modules, outputs and the autograd graph for the per-example engine.

The engine checks that every use of a sampled parameter lies inside a recorded call of
its module (:func:`_claimed_nodes`, :func:`_consumers`); the loop fallback needs the
model's outputs without their ancestors (:func:`_drop_ancestors`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn


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
