"""Model introspection behind :meth:`fisherlab.blocks.BlockMap.from_model`.

Reads a model's parameter names and its ``adapters`` attributes (adapter names, heads,
active adapters/head) to find the transformer layer list, the head's parameters and the
task module's kind, without knowing a layer count, model prefix or adapter name in advance
(the discovery rules are in :mod:`fisherlab.blocks`'s docstring). Also owns
:class:`BlockMapError`, which :mod:`fisherlab.blocks` re-exports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from fisherlab.errors import FisherlabError
from fisherlab.torch_utils import unwrap_model

# Containers under which the ``adapters`` library keeps adapter-method parameters.
_ADAPTER_CONTAINERS = frozenset(
    {"adapters", "loras", "prefix_tunings", "invertible_adapters", "refts", "prompt_tuning",
     "adapter_fusion_layer", "shared_parameters", "prefix_tuning", "vera"}
)


class BlockMapError(FisherlabError, ValueError):
    """A block map cannot be built or used as asked."""



def _named_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return dict(unwrap_model(model).named_parameters())


def _find_layer_list(names: Sequence[str], exclude: set[str]) -> str:
    """The dotted prefix of the transformer layer list (``bert.encoder.layer``)."""
    indices: dict[str, set[int]] = {}
    counts: dict[str, int] = {}
    for name in names:
        if name in exclude:
            continue
        parts = name.split(".")
        for pos, part in enumerate(parts[:-1]):
            if part.isdigit():
                prefix = ".".join(parts[:pos])
                # adapter containers can hold numbered sub-modules too (adapter_down.0)
                if set(parts[:pos]) & _ADAPTER_CONTAINERS:
                    break
                indices.setdefault(prefix, set()).add(int(part))
                counts[prefix] = counts.get(prefix, 0) + 1
                break
    if not indices:
        raise BlockMapError(
            "BlockMap.from_model: found no numbered layer list in the parameter names "
            "(expected names like '<prefix>.encoder.layer.<i>.…'); use BlockMap.from_regex"
        )
    return max(indices, key=lambda p: (len(indices[p]), counts[p], p))


def _other_head_params(model: torch.nn.Module, names: Sequence[str], head_set: set[str]) -> set[str]:
    """Parameters of the ``adapters`` heads that are not the task's head (``heads.<other>.…``)."""
    heads = set(_head_names(unwrap_model(model)))
    out = set()
    for name in names:
        parts = name.split(".")
        if name not in head_set and any(p == "heads" and i + 1 < len(parts) and parts[i + 1] in heads
                                        for i, p in enumerate(parts)):
            out.add(name)
    return out


def _refuse_inactive_adapters(model: torch.nn.Module) -> None:
    """``adapter=None`` would mean whole-layer blocks; refuse when the model has adapters but none is active.

    Measuring or scheduling the whole layers of a model whose task adapter merely is not
    active is almost never meant (the adapter would be neither trained nor measured)."""
    bare = unwrap_model(model)
    known = _adapter_names(bare)
    active = getattr(bare, "active_adapters", None)
    flat = [a for a in (active.flatten() if hasattr(active, "flatten") else [active] if active else [])
            if isinstance(a, str)]
    if known and not flat:
        listed = ", ".join(known)
        raise BlockMapError(
            f"BlockMap.from_model: the model has adapters ({listed}) but none is active, so the blocks would be "
            f"whole layers (full fine-tuning). Activate the task adapter (model.train_adapter({known[0]!r}) or "
            f"model.set_active_adapters({known[0]!r})), pass adapter=<name>, or pass mode='full' if you mean "
            "whole-layer blocks.")


def _adapter_names(model: torch.nn.Module) -> list[str]:
    config = getattr(model, "adapters_config", None)
    if config is None:
        return []
    return sorted(getattr(config, "adapters", {}).keys())


def _head_names(model: torch.nn.Module) -> list[str]:
    heads = getattr(model, "heads", None)
    return sorted(heads.keys()) if isinstance(heads, torch.nn.ModuleDict) else []


def _adapter_kind(model: torch.nn.Module, adapter: str, param_names: Iterable[str]) -> str:
    containers = set()
    for name in param_names:
        parts = name.split(".")
        if adapter in parts:
            idx = parts.index(adapter)
            if idx > 0:
                containers.add(parts[idx - 1])
    if containers == {"loras"}:
        return "lora"
    if "loras" in containers:
        return "mixed"
    return "adapter"


def _head_param_names(model: torch.nn.Module, names: Sequence[str], head: str | None,
                      adapter: str | None) -> tuple[str, ...]:
    bare = unwrap_model(model)
    heads = _head_names(bare)
    if heads:
        chosen = head
        if chosen is None:
            active = getattr(bare, "active_head", None)
            if isinstance(active, list):
                active = active[0] if len(active) == 1 else None
            if adapter is not None and adapter in heads:
                chosen = adapter
            elif isinstance(active, str):
                chosen = active
            elif len(heads) == 1:
                chosen = heads[0]
        if chosen is None:
            raise BlockMapError(
                f"BlockMap.from_model: the model has several heads {heads} and none is active; "
                "pass head=<name>"
            )
        if chosen not in heads:
            raise BlockMapError(f"BlockMap.from_model: no head named {chosen!r}; the model has heads {heads}")
        prefix = f"heads.{chosen}."
        return tuple(n for n in names if n.startswith(prefix))
    if head is not None:
        raise BlockMapError(f"BlockMap.from_model: head={head!r} given but the model has no named heads")
    base_prefix = getattr(bare, "base_model_prefix", "")
    if base_prefix and hasattr(bare, base_prefix):
        return tuple(n for n in names if not n.startswith(base_prefix + "."))
    return ()
