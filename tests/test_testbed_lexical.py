"""Lexical adaptation in language adapters: private-token embeddings stored, loaded and activated with the adapter."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fisherlab.testbed import build_testbed, tiny_world_config
from fisherlab.testbed.lang_adapters import language_adapter_model, private_token_ids
from fisherlab.testbed.languages import build_languages
from fisherlab.testbed.lexical import (
    LEXICAL_FILE,
    LexicalTable,
    add_lexical,
    load_lexical,
    save_lexical,
)
from fisherlab.testbed.pretrain import encode_corpus, train_mlm

pytestmark = pytest.mark.usefixtures("one_thread")


def lexical_config(**adapter_changes):
    config = tiny_world_config(seed=0)
    changes = {"lexical": True, "lexical_lr": 5e-3, **adapter_changes}
    return dataclasses.replace(config, adapters=dataclasses.replace(config.adapters, **changes))


@pytest.fixture(scope="module")
def lexical_testbed(tiny_testbed, tmp_path_factory):
    """The tiny world with lexical language adapters (the base is copied from the tiny testbed)."""
    return build_testbed(lexical_config(), tmp_path_factory.mktemp("lexical") / "tb", progress=False,
                         base_from=tiny_testbed.root)


def test_table_replaces_rows_and_logit_columns_like_a_brute_force_oracle():
    gen = torch.Generator().manual_seed(0)
    vocab, hidden = 11, 4
    base = torch.randn(vocab, hidden, generator=gen, dtype=torch.float64)
    bias = torch.randn(vocab, generator=gen, dtype=torch.float64)
    ids = torch.tensor([7, 2, 9])
    rows, row_bias = torch.randn(3, hidden, generator=gen, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    table = LexicalTable(ids, rows, row_bias, vocab).double()
    input_ids = torch.tensor([[1, 7, 2, 3], [9, 9, 0, 10]])
    expected = base[input_ids].clone()
    for (i, j), token in zip(torch.cartesian_prod(torch.arange(2), torch.arange(4)).tolist(),
                             input_ids.flatten().tolist(), strict=True):
        if token in ids.tolist():
            expected[i, j] = rows[ids.tolist().index(token)]
    assert torch.equal(table.embed(input_ids, base[input_ids]), expected)
    h = torch.randn(2, 5, hidden, generator=gen, dtype=torch.float64)
    logits = h @ base.T + bias
    out = table.logits(h, logits)
    for col in range(vocab):
        if col in ids.tolist():
            k = ids.tolist().index(col)
            assert torch.allclose(out[..., col], h @ rows[k] + row_bias[k])
        else:
            assert torch.equal(out[..., col], logits[..., col])


def test_table_rejects_bad_shapes_and_ids():
    with pytest.raises(ValueError, match="weight"):
        LexicalTable(torch.tensor([1, 2]), torch.zeros(3, 4), torch.zeros(2), 10)
    with pytest.raises(ValueError, match="token ids must lie"):
        LexicalTable(torch.tensor([1, 12]), torch.zeros(2, 4), torch.zeros(2), 10)
    with pytest.raises(ValueError, match="duplicate"):
        LexicalTable(torch.tensor([1, 1]), torch.zeros(2, 4), torch.zeros(2), 10)


def test_private_tokens_are_the_words_the_source_does_not_use(tiny_testbed):
    tokenizer = tiny_testbed.tokenizer()
    languages = build_languages(tiny_testbed.config)
    source = languages[tiny_testbed.source_language].words
    assert private_token_ids(tokenizer, source, source) == []
    sov = private_token_ids(tokenizer, languages["sov"].words, source)
    assert sov and set(tokenizer.convert_ids_to_tokens(sov)) == set(languages["sov"].words) - set(source)


def test_training_moves_only_the_adapter_and_its_table(tiny_testbed):
    tokenizer = tiny_testbed.tokenizer()
    languages = build_languages(tiny_testbed.config)
    private = private_token_ids(tokenizer, languages["sov"].words, languages["en"].words)
    model = language_adapter_model(tiny_testbed.base_dir, "sov", reduction_factor=2, seed=0, private_tokens=private)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"fisherlab_lexical.tables.sov.weight", "fisherlab_lexical.tables.sov.bias"} <= trainable
    assert all(".sov." in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sentences = [languages["sov"].sentence(m) for m in tiny_testbed.world().split_meanings("validation")]
    train_mlm(model, encode_corpus(tokenizer, sentences, 0.0, 0), lexical_config().adapters, len(tokenizer),
              seed=0, progress=False)
    for name, param in model.named_parameters():
        assert (not torch.equal(before[name], param.detach())) == (name in trainable), name


def test_table_is_active_only_when_its_adapter_comes_first(lexical_testbed):
    from adapters.composition import Stack

    from fisherlab.models import build_madx, swap_language

    model = build_madx(lexical_testbed.base_dir, "agent", lang_adapters=lexical_testbed.lang_adapters,
                       num_labels=3, seed=0)
    table = model.fisherlab_lexical.tables["sov"]
    private = table.token_ids[:3]
    shared = torch.tensor([lexical_testbed.tokenizer().convert_tokens_to_ids(
        build_languages(lexical_testbed.config)["en"].words[0])])
    ids = torch.cat([private, shared]).unsqueeze(0)
    embed = model.get_input_embeddings()
    base_rows = embed.weight.detach()[ids]
    swap_language(model, "en")
    assert torch.equal(embed(ids), base_rows)  # the source adapter reads the base rows
    swap_language(model, "sov")
    out = embed(ids)
    assert torch.equal(out[0, :3], table.weight.detach()[:3]) and torch.equal(out[0, 3], base_rows[0, 3])
    assert not torch.equal(out[0, :3], base_rows[0, :3])
    model.active_adapters = Stack("agent")  # a setup without a language adapter: base rows
    assert torch.equal(embed(ids), base_rows)


def test_table_is_saved_and_loaded_with_the_adapter(lexical_testbed, tiny_testbed, tmp_path):
    from safetensors.torch import load_file

    from fisherlab.models import build_madx, madx_setup

    assert not (lexical_testbed.lang_adapters["en"] / LEXICAL_FILE).exists()  # the source has no private words
    for lang in ("sov", "inv"):
        assert (lexical_testbed.lang_adapters[lang] / LEXICAL_FILE).is_file()
    assert not (tiny_testbed.lang_adapters["sov"] / LEXICAL_FILE).exists()  # lexical off: plain adapters
    model = build_madx(lexical_testbed.base_dir, "agent", lang_adapters=lexical_testbed.lang_adapters,
                       num_labels=3, seed=0)
    saved = load_file(lexical_testbed.lang_adapters["sov"] / LEXICAL_FILE)
    table = model.fisherlab_lexical.tables["sov"]
    assert torch.equal(table.token_ids, saved["token_ids"]) and torch.equal(table.weight.detach(), saved["weight"])
    assert not table.weight.requires_grad  # loaded like a language adapter: frozen
    assert "fisherlab_lexical.tables.sov.weight" not in madx_setup(model).trainable
    assert set(model.fisherlab_lexical.tables) == {"sov", "inv"}
    # Round trip through save_lexical, and a second table for the same adapter is refused.
    assert save_lexical(model, "sov", tmp_path) == tmp_path / LEXICAL_FILE
    assert save_lexical(model, "en", tmp_path / "none") is None
    with pytest.raises(ValueError, match="already has"):
        load_lexical(model, "sov", tmp_path)
    other = build_madx(tiny_testbed.base_dir, "agent", lang_adapters=tiny_testbed.lang_adapters, num_labels=3)
    loaded = load_lexical(other, "sov", tmp_path)
    assert torch.equal(loaded.weight, table.weight.detach()) and torch.equal(loaded.bias, table.bias.detach())
    with pytest.raises(ValueError, match="already has"):
        add_lexical(other, "sov", [5])


def test_lexical_adapters_rebuild_bit_identically(lexical_testbed, tiny_testbed, tmp_path):
    from safetensors.torch import load_file

    again = build_testbed(lexical_config(), tmp_path / "again", progress=False, base_from=tiny_testbed.root)
    for lang in ("sov", "inv"):
        a = load_file(lexical_testbed.lang_adapters[lang] / LEXICAL_FILE)
        b = load_file(again.lang_adapters[lang] / LEXICAL_FILE)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_base_from_requires_the_same_pretraining(tiny_testbed, tmp_path):
    from fisherlab.testbed import TestbedError

    other = dataclasses.replace(lexical_config(), pretrain=dataclasses.replace(tiny_world_config().pretrain, steps=5))
    with pytest.raises(TestbedError, match="base_from"):
        build_testbed(other, tmp_path / "x", progress=False, base_from=tiny_testbed.root)
