"""MAD-X language adapters for the testbed: ``seq_bn_inv`` trained with MLM on the frozen encoder.

Only the new adapter's parameters train. ``train_adapter`` alone would leave the
MLM head (and through weight tying, the word embeddings) trainable, which would
make the "adapter" a partial fine-tune of the base; here everything except the
parameters created by ``add_adapter`` is frozen explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fisherlab.testbed.pretrain import MLM_HEAD, encode_corpus, train_mlm
from fisherlab.testbed.world import TrainSpec


def language_adapter_model(base_dir: str | Path, language: str, reduction_factor: int, seed: int) -> torch.nn.Module:
    """The base from ``base_dir`` with a new ``seq_bn_inv`` adapter ``language``: the only trainable part.

    The adapter is active and the MLM head (``MLM_HEAD``) is the active head.
    """
    from adapters import AutoAdapterModel, SeqBnInvConfig

    model = AutoAdapterModel.from_pretrained(str(base_dir))
    if MLM_HEAD not in model.heads:
        raise ValueError(f"language_adapter_model: base {base_dir} has no {MLM_HEAD!r} head to train with")
    before = {id(p) for p in model.parameters()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.add_adapter(language, config=SeqBnInvConfig(reduction_factor=reduction_factor))
    from fisherlab.models import quiet_train_adapter

    with quiet_train_adapter():
        model.train_adapter(language)
    for param in model.parameters():
        param.requires_grad_(id(param) not in before)
    model.active_adapters = language
    model.active_head = MLM_HEAD
    return model


def train_language_adapter(base_dir: str | Path, language: str, sentences: Sequence[str], spec: TrainSpec,
                           out_dir: str | Path, tokenizer, seed: int, progress: bool = True) -> list[float]:
    """Train adapter ``language`` on ``sentences`` over the frozen base in ``base_dir``; save to ``out_dir``.

    Returns the per-step MLM losses. The saved directory is the standard
    ``save_adapter`` format (``adapter_config.json`` + weights), without a head.
    """
    model = language_adapter_model(base_dir, language, spec.reduction_factor, seed)
    corpus = encode_corpus(tokenizer, sentences, spec.pair_prob, seed)
    losses = train_mlm(model, corpus, spec, len(tokenizer), seed, desc=f"language adapter {language}",
                       progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_adapter(str(out_dir), language, with_head=False)
    return losses


def train_world_adapter(config, base_dir: str | Path, tokenizer, language: str, out_dir: str | Path,
                        progress: bool = True) -> list[float]:
    """Train the language adapter of ``language`` exactly as the testbed build does (same corpus and seed)."""
    from fisherlab.testbed.languages import build_languages, corpus
    from fisherlab.testbed.world import STREAM_ADAPTER, World

    lang = build_languages(config).get(language)
    if lang is None:
        raise ValueError(f"language adapter: unknown language {language!r}; this world has "
                         f"{list(config.language_codes)}")
    index = config.language_codes.index(language)
    sentences = corpus(World(config), lang, lang.spec.adapter_sentences, STREAM_ADAPTER)
    return train_language_adapter(base_dir, language, sentences, config.adapters, out_dir, tokenizer,
                                  seed=config.seed * 1000 + index, progress=progress)


def testbed_adapter_trainer(testbed, progress: bool = False):
    """A ``train_missing`` callable for ``build_madx``: trains a world language's adapter, saves, loads it."""

    def train(model: torch.nn.Module, language: str, path: Path) -> None:
        train_world_adapter(testbed.config, testbed.base_dir, testbed.tokenizer(), language, path, progress)
        model.load_adapter(str(path), load_as=language, with_head=False)

    return train
