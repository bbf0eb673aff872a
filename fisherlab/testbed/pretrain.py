"""Masked-language-model training: the tiny encoder from scratch, and (reused) language adapters.

BERT-style masking (15% of the non-special tokens; 80% ``[MASK]``, 10% a random
word from *any* language, 10% unchanged), optional sentence pairs. All
randomness comes from a ``torch.Generator`` seeded by the caller, and model
initialisation and dropout run under a forked global RNG, so a build is
reproducible and leaves the caller's RNG untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fisherlab.testbed.tokenizer import SPECIAL_TOKENS
from fisherlab.testbed.world import ModelSpec, TrainSpec

MLM_HEAD = "mlm"


@dataclass
class EncodedCorpus:
    """Token ids and segment ids of MLM examples (unpadded)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_corpus(tokenizer, sentences: Sequence[str], pair_prob: float, seed: int) -> EncodedCorpus:
    """Tokenize sentences; with probability ``pair_prob`` a sentence is joined with the next as a pair."""
    rng = np.random.default_rng(seed)
    singles: list[str] = []
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(sentences):
        if i + 1 < len(sentences) and rng.random() < pair_prob:
            pairs.append((sentences[i], sentences[i + 1]))
            i += 2
        else:
            singles.append(sentences[i])
            i += 1
    ids: list[list[int]] = []
    types: list[list[int]] = []
    if singles:
        enc = tokenizer(singles, truncation=True)
        ids += enc["input_ids"]
        types += enc["token_type_ids"]
    if pairs:
        enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True)
        ids += enc["input_ids"]
        types += enc["token_type_ids"]
    return EncodedCorpus(ids, types)


def mlm_batch(corpus: EncodedCorpus, indices: Iterable[int], vocab_size: int, mask_prob: float,
              generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A padded batch with BERT masking; labels are -100 except at the chosen positions."""
    rows = [corpus.input_ids[i] for i in indices]
    type_rows = [corpus.token_type_ids[i] for i in indices]
    length = max(len(r) for r in rows)
    pad_id, mask_id = SPECIAL_TOKENS.index("[PAD]"), SPECIAL_TOKENS.index("[MASK]")
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), length), dtype=torch.long)
    for k, (r, t) in enumerate(zip(rows, type_rows, strict=True)):
        input_ids[k, :len(r)] = torch.tensor(r)
        token_type_ids[k, :len(t)] = torch.tensor(t)
    attention_mask = (input_ids != pad_id).long()
    maskable = input_ids >= len(SPECIAL_TOKENS)
    chosen = (torch.rand(input_ids.shape, generator=generator) < mask_prob) & maskable
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, input_ids.shape, generator=generator)
    input_ids = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    input_ids = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, input_ids)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "labels": labels}


def train_mlm(model: torch.nn.Module, corpus: EncodedCorpus, spec: TrainSpec, vocab_size: int, seed: int,
              desc: str = "mlm", progress: bool = True, lr_overrides: dict[int, float] | None = None) -> list[float]:
    """Train the parameters of ``model`` that require grad with MLM for ``spec.steps`` steps.

    AdamW, linear warm-up (5%) and decay, gradient norm clipped at 1. Returns the
    per-step losses. Runs under a forked RNG seeded with ``seed`` (dropout), on
    ``spec.threads`` torch threads (restored after; the result depends on it).
    ``lr_overrides`` maps ``id(parameter)`` to its own peak learning rate
    (e.g. a language adapter's lexical embeddings); the rest use ``spec.lr``.
    """
    from tqdm.auto import tqdm

    if len(corpus) == 0:
        raise ValueError(f"{desc}: empty corpus")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: no trainable parameters")
    lr_overrides = lr_overrides or {}
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for p in params:
        groups.setdefault(lr_overrides.get(id(p), spec.lr), []).append(p)
    optimizer = torch.optim.AdamW([{"params": ps, "lr": lr} for lr, ps in groups.items()], lr=spec.lr,
                                  weight_decay=0.01)
    warmup = max(1, spec.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (spec.steps - s) / max(1, spec.steps - warmup))))
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(corpus), generator=gen)
    cursor = 0
    losses: list[float] = []
    model.train()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in tqdm(range(spec.steps), desc=desc, disable=not progress, leave=False):
                if cursor + spec.batch_size > len(order):
                    order, cursor = torch.randperm(len(corpus), generator=gen), 0
                indices = order[cursor:cursor + spec.batch_size].tolist()
                cursor += spec.batch_size
                batch = mlm_batch(corpus, indices, vocab_size, spec.mask_prob, gen)
                loss = model(**batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(previous_threads)
    model.eval()
    return losses


def new_encoder(spec: ModelSpec, vocab_size: int, seed: int) -> torch.nn.Module:
    """A freshly initialised BERT-style ``AutoAdapterModel`` with an MLM head named ``MLM_HEAD``."""
    from adapters import AutoAdapterModel
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.heads, intermediate_size=spec.intermediate,
        max_position_embeddings=spec.max_positions, hidden_dropout_prob=spec.dropout,
        attention_probs_dropout_prob=spec.dropout, pad_token_id=SPECIAL_TOKENS.index("[PAD]"),
        type_vocab_size=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoAdapterModel.from_config(config)
        model.add_masked_lm_head(MLM_HEAD)
    return model
