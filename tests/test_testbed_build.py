"""Building the tiny testbed: layout, tokenizer, frozen language-adapter training, determinism, caching."""

from __future__ import annotations

import json

import pytest
import torch

from fisherlab.testbed import TestbedError, build_testbed, load_testbed, tiny_world_config
from fisherlab.testbed import cache as cache_module
from fisherlab.testbed.lang_adapters import language_adapter_model
from fisherlab.testbed.languages import build_languages
from fisherlab.testbed.pretrain import MLM_HEAD, encode_corpus, train_mlm
from fisherlab.testbed.tokenizer import SPECIAL_TOKENS


def test_layout_and_manifest(tiny_testbed):
    manifest = json.loads((tiny_testbed.root / "world.json").read_text())
    assert manifest["hash"] == tiny_world_config().digest()
    assert manifest["languages"] == list(tiny_testbed.languages)
    assert (tiny_testbed.base_dir / "config.json").is_file()
    assert (tiny_testbed.base_dir / "tokenizer.json").is_file()
    for lang, path in tiny_testbed.lang_adapters.items():
        config = json.loads((path / "adapter_config.json").read_text())
        assert config["name"] == lang
        assert config["config"]["inv_adapter"] == "nice"  # seq_bn_inv: the MAD-X language adapter
    assert manifest["build"]["cpu_seconds"] > 0


def test_tokenizer_gives_one_id_per_word_and_shares_anchors(tiny_testbed):
    tokenizer = tiny_testbed.tokenizer()
    languages = build_languages(tiny_testbed.config)
    unk = tokenizer.convert_tokens_to_ids("[UNK]")
    ids = {}
    for code, lang in languages.items():
        ids[code] = {c: tokenizer.convert_tokens_to_ids(w) for c, w in lang.lexicon.items()}
        assert unk not in ids[code].values()
        assert min(ids[code].values()) >= len(SPECIAL_TOKENS)
    for concept, id_ in ids["sov"].items():
        same_word = languages["sov"].lexicon[concept] == languages["en"].lexicon[concept]
        assert (id_ == ids["en"][concept]) == same_word
    encoded = tokenizer("a b", "c")  # pair template: [CLS] A [SEP] B [SEP] with segment ids
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 1, 1]


def test_language_adapter_training_touches_only_the_adapter(tiny_testbed):
    model = language_adapter_model(tiny_testbed.base_dir, "xx", reduction_factor=2, seed=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".xx." in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokenizer = tiny_testbed.tokenizer()
    sentences = [lang.sentence(m) for lang in build_languages(tiny_testbed.config).values()
                 for m in tiny_testbed.world().split_meanings("validation")]
    spec = tiny_testbed.config.adapters
    train_mlm(model, encode_corpus(tokenizer, sentences, 0.0, 0), spec, len(tokenizer), seed=0, progress=False)
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == (name in trainable), name
    assert model.active_head == MLM_HEAD


def test_same_settings_build_identical_weights(tiny_testbed, tmp_path):
    from safetensors.torch import load_file

    again = build_testbed(tiny_world_config(seed=0), tmp_path / "again", progress=False)
    assert again.tokenizer().get_vocab() == tiny_testbed.tokenizer().get_vocab()  # same token ids
    a = load_file(tiny_testbed.base_dir / "model.safetensors")
    b = load_file(again.base_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for lang in tiny_testbed.languages:
        wa = torch.load(tiny_testbed.lang_adapters[lang] / "pytorch_adapter.bin", weights_only=True)
        wb = torch.load(again.lang_adapters[lang] / "pytorch_adapter.bin", weights_only=True)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_adapter_processes_do_not_change_the_world(tiny_testbed, tmp_path):
    """Language adapters trained by 2 worker processes: every file of the build is byte-identical to
    the sequential build's (adapter weights, configs, lexical tables, base), world.json aside (timings)."""
    import dataclasses

    config = tiny_world_config(seed=0)
    lexical = dataclasses.replace(config, adapters=dataclasses.replace(config.adapters, lexical=True))
    sequential = build_testbed(lexical, tmp_path / "one", threads=1, progress=False)
    parallel = build_testbed(lexical, tmp_path / "two", threads=2, progress=False)
    files = sorted(p.relative_to(sequential.root) for p in sequential.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(parallel.root) for p in parallel.root.rglob("*") if p.is_file())
    assert any(p.name == "lexical_embeddings.safetensors" for p in files)
    for rel in files:
        if rel.name != "world.json":
            assert (sequential.root / rel).read_bytes() == (parallel.root / rel).read_bytes(), rel
    config_text = (parallel.root / "adapters" / "en" / "adapter_config.json").read_text()
    assert str(tmp_path) not in config_text  # a stable model_name, not the staging path
    assert json.loads((parallel.root / "world.json").read_text())["build"]["threads"] == 2


def test_training_threads_are_a_world_setting(tiny_testbed, monkeypatch):
    """TrainSpec.threads is part of the hashed settings unless it is the default 1 (old hashes kept)."""
    import dataclasses

    config = tiny_world_config(seed=0)
    two = dataclasses.replace(config, pretrain=dataclasses.replace(config.pretrain, threads=2))
    assert two.digest() != config.digest()
    assert "threads" not in config.to_dict()["pretrain"] and two.to_dict()["pretrain"]["threads"] == 2
    assert type(config).from_dict(two.to_dict()) == two
    with pytest.raises(ValueError, match="threads"):
        dataclasses.replace(config.pretrain, threads=0)
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    model = language_adapter_model(tiny_testbed.base_dir, "xx", reduction_factor=2, seed=0)
    tokenizer = tiny_testbed.tokenizer()
    corpus = encode_corpus(tokenizer, ["a b c"] * 4, 0.0, 0)
    spec = dataclasses.replace(config.adapters, steps=1, batch_size=2, threads=3)
    train_mlm(model, corpus, spec, len(tokenizer), seed=0, progress=False)
    assert seen == [3, 7]  # trained on the spec's threads, the caller's restored


def test_second_build_is_a_no_op(tiny_testbed, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a cached testbed")

    monkeypatch.setattr(cache_module, "_build_into", fail)
    mtime = (tiny_testbed.root / "world.json").stat().st_mtime_ns
    again = build_testbed(tiny_world_config(seed=0), tiny_testbed.root, progress=False)
    assert again.root == tiny_testbed.root and again.manifest == tiny_testbed.manifest
    assert (tiny_testbed.root / "world.json").stat().st_mtime_ns == mtime


def test_default_location_is_the_cache_by_hash(tmp_path, monkeypatch, tiny_testbed):
    monkeypatch.setenv("FISHERLAB_CACHE", str(tmp_path))
    config = tiny_world_config(seed=0)
    target = tmp_path / "testbed" / config.digest()
    import shutil

    shutil.copytree(tiny_testbed.root, target)
    monkeypatch.setattr(cache_module, "_build_into", lambda *a, **k: pytest.fail("rebuilt"))
    assert build_testbed(config, progress=False).root == target


def test_bad_testbed_directories_are_named(tiny_testbed, tmp_path):
    with pytest.raises(TestbedError, match="world.json"):
        load_testbed(tmp_path / "missing")
    with pytest.raises(TestbedError, match="different world"):
        build_testbed(tiny_world_config(seed=1), tiny_testbed.root, progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(TestbedError, match="not a testbed"):
        build_testbed(tiny_world_config(seed=0), tmp_path / "junk", progress=False)
    with pytest.raises(TestbedError, match="threads"):
        build_testbed(tiny_world_config(seed=0), tmp_path / "t", threads=0)


def test_build_madx_trains_a_missing_world_adapter_like_the_build(tiny_testbed, tmp_path):
    from fisherlab.models import build_madx, madx_setup
    from fisherlab.testbed.lang_adapters import testbed_adapter_trainer

    adapters = {**tiny_testbed.lang_adapters, "sov": tmp_path / "sov"}
    model = build_madx(tiny_testbed.base_dir, "agent", lang_adapters=adapters, num_labels=3,
                       train_missing=testbed_adapter_trainer(tiny_testbed))
    assert "sov" in madx_setup(model).languages
    fresh = torch.load(tmp_path / "sov" / "pytorch_adapter.bin", weights_only=True)
    built = torch.load(tiny_testbed.lang_adapters["sov"] / "pytorch_adapter.bin", weights_only=True)
    assert fresh.keys() == built.keys() and all(torch.equal(fresh[k], built[k]) for k in fresh)
