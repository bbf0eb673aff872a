"""Named parameter blocks: the unit of Fisher measurement and of unfreezing.

A :class:`BlockMap` maps block names to parameter names of one model:
``layer.0 … layer.{L-1}`` for the task module of each transformer layer (a
bottleneck adapter, the LoRA matrices of that layer, or the whole layer for full
fine-tuning) and ``head`` for the task head. It is discovered from parameter
names, so nothing here knows a layer count, a model prefix (``bert.``,
``roberta.``, ``deberta.``) or an adapter name in advance.

Discovery rules (``BlockMap.from_model``):

* the *layer list* is the dotted prefix that precedes a numeric path component
  (``….encoder.layer.<i>.…``) with the most distinct indices, ties broken by
  the number of parameters under it;
* in ``adapter``/``lora`` mode a layer block holds every parameter under layer
  ``i`` whose path has a component equal to the task-module name (this catches
  ``adapters.<name>``, ``loras.<name>`` on q/v or any other LoRA target);
* in ``full`` mode a layer block holds the layer's own weights (parameters of
  any adapter module are left out);
* the head is ``heads.<name>`` of an adapters model (the given head, the active
  head, or the head named like the task module), or everything outside the base
  model (``classifier``, ``qa_outputs``, ``cls``) of a plain ``AutoModelFor*``.

Parameters matched by neither rule but belonging to the task module (e.g.
invertible adapters at the embeddings) form an extra block ``shared``; in full
mode the remaining base weights form ``embeddings``, except the pooler (a ``pooler``
path component, e.g. BERT's ``pooler.dense``), which is its own block ``pooler``.
Extra blocks are measured but never scheduled. Parameters of other ``adapters`` heads
(``heads.<other>``, e.g. a saved MLM head) belong to no block.

``adapter=None`` on a model that has adapters but none active raises
:class:`BlockMapError` (it would silently mean whole-layer blocks); pass ``mode="full"``
to mean them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fisherlab.block_discovery import (
    _ADAPTER_CONTAINERS,
    BlockMapError,
    _adapter_kind,
    _adapter_names,
    _find_layer_list,
    _head_param_names,
    _named_parameters,
    _other_head_params,
    _refuse_inactive_adapters,
)
from fisherlab.torch_utils import unwrap_model

HEAD = "head"
POOLER = "pooler"
"""Full fine-tuning: the pooler's block (parameters with a ``pooler`` path component)."""
MODES = ("auto", "adapter", "lora", "full")


@dataclass(frozen=True)
class Block:
    """One named block: its layer index (``None`` for head/extra blocks) and parameter names."""

    name: str
    layer: int | None
    param_names: tuple[str, ...]

    @property
    def is_layer(self) -> bool:
        return self.layer is not None


def layer_block_name(layer: int) -> str:
    """The block name of transformer layer ``layer``."""
    return f"layer.{layer}"


class BlockMap(Mapping[str, Block]):
    """Ordered mapping ``layer.0 … layer.{L-1}``, extra blocks, ``head`` -> :class:`Block`."""

    def __init__(self, blocks: Sequence[Block], *, mode: str = "custom", task_name: str | None = None,
                 layer_prefix: str | None = None) -> None:
        seen: set[str] = set()
        for block in blocks:
            if block.name in seen:
                raise BlockMapError(f"BlockMap: duplicate block name {block.name!r}")
            if not block.param_names:
                raise BlockMapError(f"BlockMap: block {block.name!r} has no parameters")
            seen.add(block.name)
        owner: dict[str, str] = {}
        for block in blocks:
            for pname in block.param_names:
                if pname in owner:
                    raise BlockMapError(
                        f"BlockMap: parameter {pname!r} is in both {owner[pname]!r} and {block.name!r}"
                    )
                owner[pname] = block.name
        self._blocks = {b.name: b for b in blocks}
        self._owner = owner
        self.mode = mode
        self.task_name = task_name
        self.layer_prefix = layer_prefix

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: torch.nn.Module, adapter: str | None = None, mode: str = "auto",
                   head: str | None = None) -> BlockMap:
        """Discover the blocks of ``model`` for task module ``adapter`` (see module docstring).

        ``mode``: ``"auto"`` (LoRA or bottleneck from the parameter names; ``"full"``
        when ``adapter`` is None), ``"adapter"``, ``"lora"`` or ``"full"``.
        """
        if mode not in MODES:
            raise BlockMapError(f"BlockMap.from_model: unknown mode {mode!r}; expected one of {MODES}")
        params = _named_parameters(model)
        names = list(params)
        if not names:
            raise BlockMapError("BlockMap.from_model: the model has no parameters")
        if adapter is None and mode == "auto":
            _refuse_inactive_adapters(model)
        if adapter is None and mode in ("auto", "full"):
            mode = "full"
        elif adapter is None:
            raise BlockMapError(f"BlockMap.from_model: mode={mode!r} needs adapter=<task module name>")
        if adapter is not None:
            known = _adapter_names(unwrap_model(model))
            if adapter not in known:
                listed = ", ".join(known) if known else "none"
                raise BlockMapError(
                    f"BlockMap.from_model: no adapter named {adapter!r}; the model's adapters are: {listed}"
                )
        head_params = _head_param_names(model, names, head, adapter)
        head_set = set(head_params)
        other_heads = _other_head_params(model, names, head_set)  # e.g. a saved MLM head: not this task's
        prefix = _find_layer_list(names, head_set | other_heads)
        layer_re = re.compile(re.escape(prefix) + r"\.(\d+)\.") if prefix else re.compile(r"^(\d+)\.")

        if mode == "full":
            other_adapters = set(_adapter_names(unwrap_model(model)))
            def in_block(parts: list[str]) -> bool:
                return not (set(parts) & _ADAPTER_CONTAINERS) and not (set(parts) & other_adapters)
        else:
            def in_block(parts: list[str]) -> bool:
                return adapter in parts
            if mode == "auto":
                mode = _adapter_kind(model, adapter, [n for n in names if n not in head_set])

        per_layer: dict[int, list[str]] = {}
        extra: list[str] = []
        for name in names:
            if name in head_set or name in other_heads:
                continue
            parts = name.split(".")
            if not in_block(parts):
                continue
            match = layer_re.match(name)
            if match:
                per_layer.setdefault(int(match.group(1)), []).append(name)
            else:
                extra.append(name)
        if not per_layer:
            raise BlockMapError(
                f"BlockMap.from_model: no parameters of {adapter or 'the layers'!r} found under the "
                f"layer list {prefix!r} (mode {mode!r})"
            )
        n_layers = max(per_layer) + 1
        missing = [i for i in range(n_layers) if i not in per_layer]
        if missing and mode == "full":
            raise BlockMapError(f"BlockMap.from_model: layers {missing} have no parameters")
        blocks = [Block(layer_block_name(i), i, tuple(per_layer[i])) for i in sorted(per_layer)]
        if mode == "full":  # the pooler is its own block: it is not part of the embeddings
            pooler = tuple(n for n in extra if POOLER in n.split("."))
            rest = tuple(n for n in extra if n not in pooler)
            if rest:
                blocks.append(Block("embeddings", None, rest))
            if pooler:
                blocks.append(Block(POOLER, None, pooler))
        elif extra:
            blocks.append(Block("shared", None, tuple(extra)))
        if head_params:
            blocks.append(Block(HEAD, None, head_params))
        return cls(blocks, mode=mode, task_name=adapter, layer_prefix=prefix)

    @classmethod
    def from_regex(cls, model: torch.nn.Module, layer_pattern: str, head_pattern: str | None = None) -> BlockMap:
        """Blocks from regular expressions over parameter names.

        ``layer_pattern`` must have one capture group, the layer index (searched, not
        anchored); ``head_pattern`` selects the head's parameters.
        """
        layer_re = re.compile(layer_pattern)
        if layer_re.groups != 1:
            raise BlockMapError(
                f"BlockMap.from_regex: layer_pattern {layer_pattern!r} must have exactly one capture "
                "group (the layer index)"
            )
        head_re = re.compile(head_pattern) if head_pattern else None
        per_layer: dict[int, list[str]] = {}
        head: list[str] = []
        for name in _named_parameters(model):
            if head_re is not None and head_re.search(name):
                head.append(name)
                continue
            match = layer_re.search(name)
            if match:
                try:
                    index = int(match.group(1))
                except ValueError as err:
                    raise BlockMapError(
                        f"BlockMap.from_regex: capture {match.group(1)!r} of {name!r} is not an integer"
                    ) from err
                per_layer.setdefault(index, []).append(name)
        if not per_layer:
            raise BlockMapError(f"BlockMap.from_regex: no parameter name matches {layer_pattern!r}")
        if head_re is not None and not head:
            raise BlockMapError(f"BlockMap.from_regex: no parameter name matches head {head_pattern!r}")
        blocks = [Block(layer_block_name(i), i, tuple(per_layer[i])) for i in sorted(per_layer)]
        if head:
            blocks.append(Block(HEAD, None, tuple(head)))
        return cls(blocks, mode="regex")

    # -- mapping protocol ---------------------------------------------------------------
    def __getitem__(self, name: str) -> Block:
        try:
            return self._blocks[name]
        except KeyError:
            raise KeyError(f"no block named {name!r}; blocks are {self.names}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}({len(b.param_names)})" for n, b in self._blocks.items())
        return f"BlockMap(mode={self.mode!r}, task={self.task_name!r}, blocks=[{sizes}])"

    # -- queries ------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """All block names in order: layers (by index), extra blocks, head."""
        return list(self._blocks)

    @property
    def layer_blocks(self) -> list[str]:
        """The schedulable blocks ``layer.i`` in increasing layer order."""
        return [n for n, b in self._blocks.items() if b.layer is not None]

    @property
    def layers(self) -> list[int]:
        return [b.layer for b in self._blocks.values() if b.layer is not None]

    @property
    def n_layers(self) -> int:
        return len(self.layer_blocks)

    @property
    def has_head(self) -> bool:
        return HEAD in self._blocks

    def layer_name(self, layer: int) -> str:
        name = layer_block_name(layer)
        if name not in self._blocks:
            raise BlockMapError(f"BlockMap: no block for layer {layer}; layers are {self.layers}")
        return name

    def block_of(self, param_name: str) -> str | None:
        """The block owning ``param_name`` (DDP's ``module.`` prefix tolerated), or None."""
        while param_name not in self._owner and param_name.startswith("module."):
            param_name = param_name[len("module."):]
        return self._owner.get(param_name)

    def parameters(self, model: torch.nn.Module, name: str) -> dict[str, torch.nn.Parameter]:
        """The parameters of block ``name`` in ``model`` (by name, no copies)."""
        block = self[name]
        bare = unwrap_model(model)
        out: dict[str, torch.nn.Parameter] = {}
        for pname in block.param_names:  # a path walk per parameter, not a walk of the whole model
            try:
                out[pname] = bare.get_parameter(pname)
            except AttributeError:
                raise BlockMapError(
                    f"BlockMap: block {name!r} names a parameter the model does not have: {pname!r}"
                ) from None
        return out

    def all_parameters(self, model: torch.nn.Module,
                       names: Iterable[str] | None = None) -> dict[str, torch.nn.Parameter]:
        """Parameters of several blocks (all by default), in block order."""
        out: dict[str, torch.nn.Parameter] = {}
        for name in (self.names if names is None else names):
            out.update(self.parameters(model, name))
        return out

    def set_trainable(self, model: torch.nn.Module, names: Iterable[str], trainable: bool) -> None:
        """Set ``requires_grad`` of the named blocks; freezing also drops ``.grad``."""
        names = list(names)
        for name in names:  # validate all before changing anything
            self[name]
        for name in names:
            for param in self.parameters(model, name).values():
                param.requires_grad_(trainable)
                if not trainable:
                    param.grad = None

    def trainable_blocks(self, model: torch.nn.Module) -> list[str]:
        """Blocks whose parameters all require grad."""
        params = _named_parameters(model)
        return [n for n, b in self._blocks.items() if all(params[p].requires_grad for p in b.param_names)]

    def numel(self, model: torch.nn.Module) -> dict[str, int]:
        """Number of scalar parameters per block."""
        return {n: sum(p.numel() for p in self.parameters(model, n).values()) for n in self.names}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (for run metadata)."""
        return {
            "mode": self.mode,
            "task": self.task_name,
            "layer_prefix": self.layer_prefix,
            "blocks": {n: {"layer": b.layer, "n_params": len(b.param_names)} for n, b in self._blocks.items()},
        }


def as_block_map(blocks: BlockMap | Mapping[str, Sequence[str]] | None, model: torch.nn.Module,
                 adapter: str | None = None) -> BlockMap:
    """Accept a BlockMap, a plain ``{block: [param names]}`` mapping, or None (discover)."""
    if isinstance(blocks, BlockMap):
        return blocks
    if blocks is None:
        return BlockMap.from_model(model, adapter=adapter)
    built = []
    for name, pnames in blocks.items():
        match = re.fullmatch(r"layer\.(\d+)", name)
        built.append(Block(name, int(match.group(1)) if match else None, tuple(pnames)))
    return BlockMap(built)
