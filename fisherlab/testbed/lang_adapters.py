"""MAD-X language adapters for the testbed: ``seq_bn_inv`` trained with MLM on the frozen encoder.

Only the new adapter's parameters train (with ``TrainSpec.lexical``, also the
adapter's lexical table: embeddings for the language's private tokens, see
``lexical.py``). ``train_adapter`` alone would leave the
MLM head (and through weight tying, the word embeddings) trainable, which would
make the "adapter" a partial fine-tune of the base; here everything except the
parameters created by ``add_adapter`` is frozen explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fisherlab.testbed.pretrain import MLM_HEAD, encode_corpus, train_mlm
from fisherlab.testbed.world import BASE_NAME, TrainSpec


def language_adapter_model(base_dir: str | Path, language: str, reduction_factor: int, seed: int,
                           invertible: bool = True, private_tokens: Sequence[int] = ()) -> torch.nn.Module:
    """The base from ``base_dir`` with a new adapter ``language``: the only trainable part.

    ``seq_bn_inv`` (``invertible``) or ``seq_bn``; with ``private_tokens`` (token
    ids) the adapter also gets a lexical table over them, initialised from the
    base rows. The adapter is active and the MLM head (``MLM_HEAD``) is the active head.
    """
    from adapters import AutoAdapterModel, SeqBnConfig, SeqBnInvConfig

    from fisherlab.testbed.lexical import add_lexical

    model = AutoAdapterModel.from_pretrained(str(base_dir))
    if MLM_HEAD not in model.heads:
        raise ValueError(f"language_adapter_model: base {base_dir} has no {MLM_HEAD!r} head to train with")
    before = {id(p) for p in model.parameters()}
    config_class = SeqBnInvConfig if invertible else SeqBnConfig
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.add_adapter(language, config=config_class(reduction_factor=reduction_factor))
    from fisherlab.models import quiet_train_adapter

    with quiet_train_adapter():
        model.train_adapter(language)
    if private_tokens:
        add_lexical(model, language, private_tokens)
    for param in model.parameters():
        param.requires_grad_(id(param) not in before)
    model.active_adapters = language
    model.active_head = MLM_HEAD
    return model


def train_language_adapter(base_dir: str | Path, language: str, sentences: Sequence[str], spec: TrainSpec,
                           out_dir: str | Path, tokenizer, seed: int, progress: bool = True,
                           private_tokens: Sequence[int] = ()) -> list[float]:
    """Train adapter ``language`` on ``sentences`` over the frozen base in ``base_dir``; save to ``out_dir``.

    Returns the per-step MLM losses. The saved directory is the standard
    ``save_adapter`` format (``adapter_config.json`` + weights), without a head,
    plus the lexical table (``lexical.LEXICAL_FILE``) when ``private_tokens`` are given.
    """
    from fisherlab.testbed.lexical import ATTRIBUTE, save_lexical

    model = language_adapter_model(base_dir, language, spec.reduction_factor, seed, spec.invertible,
                                   private_tokens)
    corpus = encode_corpus(tokenizer, sentences, spec.pair_prob, seed)
    overrides = {}
    if private_tokens and spec.lexical_lr is not None:
        overrides = {id(p): spec.lexical_lr for p in getattr(model, ATTRIBUTE).tables[language].parameters()}
    losses = train_mlm(model, corpus, spec, len(tokenizer), seed, desc=f"language adapter {language}",
                       progress=progress, lr_overrides=overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # adapter_config.json records the base's name: a stable one, not the build's staging path
    model.config.name_or_path = BASE_NAME
    model.save_adapter(str(out_dir), language, with_head=False)
    save_lexical(model, language, out_dir)
    return losses


def private_token_ids(tokenizer, words: Sequence[str], source_words: Sequence[str]) -> list[int]:
    """Token ids of ``words`` that the source language does not use (sorted, unique)."""
    shared = set(source_words)
    ids = tokenizer.convert_tokens_to_ids(sorted({w for w in words if w not in shared}))
    if tokenizer.unk_token_id in ids:
        raise ValueError("private_token_ids: a private word is not in the tokenizer's vocabulary")
    return sorted(ids)


def train_world_adapter(config, base_dir: str | Path, tokenizer, language: str, out_dir: str | Path,
                        progress: bool = True) -> list[float]:
    """Train the language adapter of ``language`` exactly as the testbed build does (same corpus and seed)."""
    from fisherlab.testbed.languages import build_languages, corpus
    from fisherlab.testbed.world import STREAM_ADAPTER, World

    languages = build_languages(config)
    lang = languages.get(language)
    if lang is None:
        raise ValueError(f"language adapter: unknown language {language!r}; this world has "
                         f"{list(config.language_codes)}")
    index = config.language_codes.index(language)
    sentences = corpus(World(config), lang, lang.spec.adapter_sentences, STREAM_ADAPTER)
    private = (private_token_ids(tokenizer, lang.words, languages[config.source_language].words)
               if config.adapters.lexical else [])
    return train_language_adapter(base_dir, language, sentences, config.adapters, out_dir, tokenizer,
                                  seed=config.seed * 1000 + index, progress=progress, private_tokens=private)


def testbed_adapter_trainer(testbed, progress: bool = False):
    """A ``train_missing`` callable for ``build_madx``: trains a world language's adapter, saves, loads it."""

    def train(model: torch.nn.Module, language: str, path: Path) -> None:
        from fisherlab.testbed.lexical import load_lexical

        train_world_adapter(testbed.config, testbed.base_dir, testbed.tokenizer(), language, path, progress)
        model.load_adapter(str(path), load_as=language, with_head=False)
        load_lexical(model, language, path)

    return train


def _adapter_job(config, base_dir: str, tokenizer, language: str, out_dir: str) -> list[float]:
    """One language adapter in a worker process (``train_mlm`` uses ``config.adapters.threads``)."""
    return train_world_adapter(config, base_dir, tokenizer, language, out_dir, progress=False)


def train_world_adapters(config, base_dir: str | Path, tokenizer, out_dirs: dict[str, Path], *, processes: int = 1,
                         progress: bool = True) -> dict[str, list[float]]:
    """Train every language adapter of the world (``out_dirs``: language -> directory); returns the losses.

    Each adapter depends only on the base, its language's corpus and its own seed, so the
    adapters are independent: with ``processes >= 2`` they train in that many spawned worker
    processes. Each training runs on ``config.adapters.threads`` torch threads wherever it
    runs, so the weights are the same (bit-identical) for every ``processes``.
    """
    languages = list(out_dirs)
    if processes < 2 or len(languages) < 2:
        return {code: train_world_adapter(config, base_dir, tokenizer, code, out_dirs[code], progress)
                for code in languages}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    workers = min(processes, len(languages))
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {code: pool.submit(_adapter_job, config, str(base_dir), tokenizer, code, str(out_dirs[code]))
                   for code in languages}
        losses = {}
        with tqdm(total=len(languages), desc=f"language adapters ({workers} processes)", disable=not progress,
                  leave=False) as bar:
            for code in languages:
                losses[code] = futures[code].result()
                bar.set_postfix_str(code)
                bar.update()
    return losses
