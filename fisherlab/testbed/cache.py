"""Build a testbed once, cache it by the hash of its settings, reuse it.

Layout of a testbed directory (all standard ``save_pretrained`` formats)::

    world.json            manifest: hash, settings, languages, paths, build cost, versions
    base/                 the pretrained encoder (AutoAdapterModel, MLM head "mlm") + tokenizer
    adapters/<lang>/      one MAD-X language adapter (seq_bn_inv) per language

A directory is only published (renamed into place) once complete, so an
interrupted build never looks like a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fisherlab.errors import FisherlabError
from fisherlab.testbed.world import STREAM_PRETRAIN, WorldConfig, world_config

MANIFEST = "world.json"


class TestbedError(FisherlabError, ValueError):
    """A testbed directory is missing, incomplete or holds a different world."""

    __test__ = False  # not a pytest test class


def default_cache_dir() -> Path:
    """``$FISHERLAB_CACHE/testbed``, else ``$XDG_CACHE_HOME/fisherlab/testbed``, else ``~/.cache/fisherlab/testbed``."""
    if os.environ.get("FISHERLAB_CACHE"):
        return Path(os.environ["FISHERLAB_CACHE"]).expanduser() / "testbed"
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "fisherlab" / "testbed"


@dataclass(frozen=True)
class Testbed:
    """A built testbed on disk."""

    __test__ = False

    root: Path
    config: WorldConfig
    manifest: dict[str, Any]

    @property
    def base_dir(self) -> Path:
        return self.root / self.manifest["base"]

    @property
    def source_language(self) -> str:
        return self.config.source_language

    @property
    def languages(self) -> tuple[str, ...]:
        return self.config.language_codes

    @property
    def lang_adapters(self) -> dict[str, Path]:
        """Language -> adapter directory, ready for ``build_madx(lang_adapters=...)``."""
        return {lang: self.root / rel for lang, rel in self.manifest["adapters"].items()}

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.base_dir))

    def world(self):
        from fisherlab.testbed.world import World

        return World(self.config)

    def language_models(self):
        """Language code -> ``Language`` (realise/parse)."""
        from fisherlab.testbed.languages import build_languages

        return build_languages(self.config)


def load_testbed(path: str | Path) -> Testbed:
    """Open a built testbed directory (checks that its manifest is complete)."""
    root = Path(path).expanduser()
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise TestbedError(f"testbed: {root} has no {MANIFEST}; build it with `fisherlab testbed build --out {root}`")
    try:
        manifest = json.loads(manifest_path.read_text())
        config = WorldConfig.from_dict(manifest["config"])
    except (json.JSONDecodeError, KeyError) as err:
        raise TestbedError(f"testbed: {manifest_path} is malformed ({err})") from err
    if manifest.get("hash") != config.digest():
        raise TestbedError(f"testbed: {manifest_path} hash {manifest.get('hash')!r} does not match its settings "
                           f"({config.digest()!r})")
    return Testbed(root, config, manifest)


def build_testbed(config: WorldConfig | str = "default", out: str | Path | None = None, *, threads: int | None = None,
                  progress: bool = True, force: bool = False, base_from: str | Path | None = None) -> Testbed:
    """Build (or reuse) the testbed for ``config`` in ``out`` (default: cache dir / hash).

    A complete testbed with the same hash in ``out`` is reused without work.
    ``threads``: how many language adapters train at once (worker processes; default:
    the number of CPU cores). The torch threads of each training are world settings
    (``TrainSpec.threads``), so the result does not depend on ``threads``. ``base_from``:
    a built testbed whose settings differ from ``config`` only in the language-adapter
    and task settings; its pretrained base is copied instead of retrained (the
    build is deterministic, so the result is the same; for measuring variants).
    """
    if isinstance(config, str):
        config = world_config(config)
    if threads is None:
        threads = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise TestbedError(f"build_testbed: threads must be an integer >= 1, got {threads!r}")
    digest = config.digest()
    root = Path(out).expanduser() if out is not None else default_cache_dir() / digest
    if (root / MANIFEST).is_file() and not force:
        existing = load_testbed(root)
        if existing.manifest["hash"] != digest:
            raise TestbedError(f"build_testbed: out {root} holds a different world (hash "
                               f"{existing.manifest['hash']}, wanted {digest}); choose another out or force=True")
        return existing
    if root.exists() and any(root.iterdir()) and not (root / MANIFEST).is_file() and not force:
        raise TestbedError(f"build_testbed: out {root} exists, is not empty and is not a testbed; "
                           "choose another out or force=True")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _build_into(config, staging, threads, progress, _reusable_base(config, base_from))
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_testbed(root)


def _reusable_base(config: WorldConfig, base_from: str | Path | None) -> Testbed | None:
    """The testbed at ``base_from`` if its base was pretrained exactly as ``config``'s would be."""
    if base_from is None:
        return None
    donor = load_testbed(base_from)
    strip = {"adapters": None, "task": None}
    if {**donor.config.to_dict(), **strip} != {**config.to_dict(), **strip}:
        raise TestbedError(f"build_testbed: base_from {base_from} was pretrained with other settings than this "
                           "world (only the language-adapter and task settings may differ)")
    return donor


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished child processes (the adapter workers)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _build_into(config: WorldConfig, staging: Path, threads: int, progress: bool,
                donor: Testbed | None = None) -> dict[str, Any]:
    import adapters
    import torch
    import transformers

    from fisherlab.testbed.lang_adapters import train_world_adapters
    from fisherlab.testbed.languages import build_languages, corpus
    from fisherlab.testbed.pretrain import (
        MLM_HEAD,
        EncodedCorpus,
        encode_corpus,
        new_encoder,
        train_mlm,
    )
    from fisherlab.testbed.tokenizer import build_tokenizer
    from fisherlab.testbed.world import World

    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    world = World(config)
    languages = build_languages(config)
    tokenizer = build_tokenizer((w for lang in languages.values() for w in lang.words),
                                model_max_length=config.model.max_positions)
    pretrain_corpus = EncodedCorpus([], [])
    source = languages[config.source_language]
    for lang in languages.values():
        sentences = corpus(world, lang, lang.spec.pretrain_sentences, STREAM_PRETRAIN, source, lang.spec.code_switch)
        if sentences:
            part = encode_corpus(tokenizer, sentences, config.pretrain.pair_prob, config.seed)
            pretrain_corpus.input_ids += part.input_ids
            pretrain_corpus.token_type_ids += part.token_type_ids
    data_seconds = time.perf_counter() - wall0

    base = staging / "base"
    if donor is None:
        model = new_encoder(config.model, len(tokenizer), config.seed)
        pretrain_losses = train_mlm(model, pretrain_corpus, config.pretrain, len(tokenizer), config.seed,
                                    desc="pretraining", progress=progress)
        model.save_pretrained(str(base))
        tokenizer.save_pretrained(str(base))
    else:
        shutil.copytree(donor.base_dir, base)
        pretrain_losses = donor.manifest["build"]["pretrain_loss"]  # already summarised
    pretrain_seconds = time.perf_counter() - wall0 - data_seconds

    adapter_paths = {code: f"adapters/{code}" for code in languages}
    adapter_losses = train_world_adapters(config, base, tokenizer, {code: staging / rel for code, rel in adapter_paths.items()},
                                          processes=threads, progress=progress)

    def _ends(losses: list[float]) -> dict[str, float]:
        k = max(1, len(losses) // 10)
        return {"first": sum(losses[:k]) / k, "last": sum(losses[-k:]) / k}

    manifest = {
        "format": 1,
        "hash": config.digest(),
        "config": config.to_dict(),
        "source_language": config.source_language,
        "languages": list(config.language_codes),
        "base": "base",
        "mlm_head": MLM_HEAD,
        "adapters": adapter_paths,
        "vocab_size": len(tokenizer),
        "lexicons": {code: lang.lexicon for code, lang in languages.items()},
        "build": {
            "threads": threads,
            "wall_seconds": round(time.perf_counter() - wall0, 2),
            "cpu_seconds": round(_cpu_seconds() - cpu0, 2),  # this process + its finished workers
            "data_seconds": round(data_seconds, 2),
            "pretrain_seconds": round(pretrain_seconds, 2),
            "pretrain_loss": _ends(pretrain_losses) if donor is None else pretrain_losses,
            "base_from": None if donor is None else donor.manifest["hash"],
            "adapter_loss": {code: _ends(v) for code, v in adapter_losses.items()},
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "adapters": adapters.__version__},
    }
    tmp = staging / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp.rename(staging / MANIFEST)
    return manifest
