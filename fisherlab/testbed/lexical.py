"""Lexical adaptation inside a language adapter: trained embeddings for the language's private tokens.

MAD-X's successors for unseen vocabularies (Pfeiffer et al., 2021, "UNKs
Everywhere") give a language adapter its own embeddings for the tokens of its
language that the base model does not know. Here a language adapter may carry
a *lexical table*: replacement rows of the word-embedding matrix for a set of
token ids (the language's private tokens, i.e. tokens the source language does
not use) and, for MLM training, their output biases.

The table is **activated with the adapter**: a forward hook on the model's input
embeddings replaces the rows of the table of the *first* adapter of the active
setup (the same rule ``adapters`` uses for invertible adapters), so
``Stack(lang, task)`` reads ``lang``'s private words through ``lang``'s own
embeddings and ``Stack(source, task)`` reads them through the base rows (for a
language held out of pretraining: untrained, like an unknown token). When the
MLM head is used (language-adapter training), a hook on the output embeddings
replaces the same tokens' logits with ``hidden @ table.T + bias`` (weight tying,
as in the base). The table is **stored and loaded with the adapter**: the file
``LEXICAL_FILE`` in the adapter directory (``save_lexical`` / ``load_lexical``);
``fisherlab.models.load_language_adapter`` loads it when present.

Tensor shapes: ``token_ids`` ``[n]`` (int64), ``weight`` ``[n, hidden]``,
``bias`` ``[n]``; the model's word embeddings ``[vocab, hidden]``.
"""

from __future__ import annotations

from pathlib import Path

import torch

LEXICAL_FILE = "lexical_embeddings.safetensors"
ATTRIBUTE = "fisherlab_lexical"


class LexicalTable(torch.nn.Module):
    """Replacement embedding rows (and output biases) for ``token_ids`` of one language adapter."""

    def __init__(self, token_ids: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, vocab_size: int) -> None:
        super().__init__()
        token_ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
        if weight.dim() != 2 or weight.shape[0] != len(token_ids) or bias.shape != (len(token_ids),):
            raise ValueError(f"LexicalTable: expected weight [n, hidden] and bias [n] for n={len(token_ids)} "
                             f"token ids, got {tuple(weight.shape)} and {tuple(bias.shape)}")
        if len(token_ids) and (int(token_ids.min()) < 0 or int(token_ids.max()) >= vocab_size):
            raise ValueError(f"LexicalTable: token ids must lie in [0, {vocab_size}), got "
                             f"[{int(token_ids.min())}, {int(token_ids.max())}]")
        if len(set(token_ids.tolist())) != len(token_ids):
            raise ValueError("LexicalTable: duplicate token ids")
        self.register_buffer("token_ids", token_ids.clone(), persistent=False)
        position = torch.full((vocab_size,), -1, dtype=torch.long)
        position[token_ids] = torch.arange(len(token_ids))
        self.register_buffer("position", position, persistent=False)  # token id -> row, or -1
        self.weight = torch.nn.Parameter(weight.detach().clone())
        self.bias = torch.nn.Parameter(bias.detach().clone())

    def embed(self, input_ids: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``embeddings`` [..., hidden] with the rows of this table's tokens in ``input_ids`` [...] replaced."""
        rows = self.position.to(input_ids.device)[input_ids]
        hit = rows >= 0  # no data-dependent branch: the hook stays traceable (torch.func, jit)
        replaced = self.weight[rows.clamp(min=0)].to(embeddings.dtype)
        return torch.where(hit.unsqueeze(-1), replaced, embeddings)

    def logits(self, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` [..., vocab] with this table's columns recomputed as ``hidden @ weight.T + bias``."""
        mine = hidden @ self.weight.T.to(hidden.dtype) + self.bias.to(hidden.dtype)
        return logits.index_copy(-1, self.token_ids.to(logits.device), mine)


class LexicalAdapters(torch.nn.Module):
    """Adapter name -> ``LexicalTable``; its hooks read the model's active adapter setup at each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = torch.nn.ModuleDict()


def lexical_adapters(model: torch.nn.Module) -> LexicalAdapters:
    """The model's ``LexicalAdapters`` (created and hooked into its embeddings on first use)."""
    existing = getattr(model, ATTRIBUTE, None)
    if existing is not None:
        return existing
    module = LexicalAdapters()
    setattr(model, ATTRIBUTE, module)
    base = model.base_model

    def active_table() -> LexicalTable | None:
        setup = base._get_active_setup() if hasattr(base, "_get_active_setup") else None
        if setup is None or len(setup) == 0:
            return None
        first = setup.first()
        return module.tables[first] if first in module.tables else None

    def on_input(_module, args, output):
        table = active_table()
        return output if table is None else table.embed(args[0], output)

    def on_output(_module, args, output):
        table = active_table()
        return output if table is None else table.logits(args[0], output)

    model.get_input_embeddings().register_forward_hook(on_input)
    # The output embeddings belong to the MLM head when there is one (language-adapter training);
    # task models have no tied output layer, so only the input side applies there.
    output_layer = model.get_output_embeddings()
    if output_layer is not None:
        output_layer.register_forward_hook(on_output)
    return module


def add_lexical(model: torch.nn.Module, adapter: str, token_ids, *, init: str = "base") -> LexicalTable:
    """A new trainable lexical table for ``adapter`` over ``token_ids``, initialised from the base rows.

    ``init="base"`` copies the model's current embedding rows and output biases
    of those tokens (for a language held out of pretraining these are untrained).
    """
    if init != "base":
        raise ValueError(f"add_lexical: init must be 'base', got {init!r}")
    module = lexical_adapters(model)
    if adapter in module.tables:
        raise ValueError(f"add_lexical: adapter {adapter!r} already has a lexical table")
    embeddings = model.get_input_embeddings().weight
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    output_layer = model.get_output_embeddings()
    bias = (output_layer.bias.detach()[ids] if output_layer is not None and output_layer.bias is not None
            else torch.zeros(len(ids)))
    table = LexicalTable(ids, embeddings.detach()[ids], bias, embeddings.shape[0])
    module.tables[adapter] = table
    return table


def save_lexical(model: torch.nn.Module, adapter: str, directory: str | Path) -> Path | None:
    """Write ``adapter``'s lexical table to ``directory/LEXICAL_FILE``; None when it has none."""
    from safetensors.torch import save_file

    module = getattr(model, ATTRIBUTE, None)
    if module is None or adapter not in module.tables:
        return None
    table = module.tables[adapter]
    path = Path(directory) / LEXICAL_FILE
    save_file({"token_ids": table.token_ids.contiguous(), "weight": table.weight.detach().contiguous(),
               "bias": table.bias.detach().contiguous()}, str(path))
    return path


def load_lexical(model: torch.nn.Module, adapter: str, directory: str | Path) -> LexicalTable | None:
    """Load ``directory/LEXICAL_FILE`` (if present) as ``adapter``'s lexical table; frozen, like a loaded adapter."""
    from safetensors.torch import load_file

    path = Path(directory) / LEXICAL_FILE
    if not path.is_file():
        return None
    try:
        data = load_file(str(path))
        token_ids, weight, bias = data["token_ids"], data["weight"], data["bias"]
    except (KeyError, OSError, RuntimeError) as err:
        raise ValueError(f"load_lexical: {path} is not a lexical table (expected token_ids, weight, bias): "
                         f"{err}") from err
    embeddings = model.get_input_embeddings().weight
    if weight.dim() != 2 or weight.shape[1] != embeddings.shape[1]:
        raise ValueError(f"load_lexical: {path} has rows of width {tuple(weight.shape)[1:]}, the model's "
                         f"embeddings have width {embeddings.shape[1]}")
    module = lexical_adapters(model)
    if adapter in module.tables:
        raise ValueError(f"load_lexical: adapter {adapter!r} already has a lexical table")
    table = LexicalTable(token_ids, weight.to(embeddings.dtype), bias.to(embeddings.dtype), embeddings.shape[0])
    table.requires_grad_(False)
    module.tables[adapter] = table.to(embeddings.device)
    return table
