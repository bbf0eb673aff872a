"""The world and its languages: determinism, what each transformation claims, round trips."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from fisherlab.testbed.languages import (
    FUNCTION_CONCEPTS,
    build_languages,
    build_lexicons,
    content_concepts,
    corpus,
)
from fisherlab.testbed.world import (
    STREAM_PRETRAIN,
    LanguageSpec,
    World,
    WorldConfig,
    default_world_config,
    tiny_world_config,
    world_config,
)

CONFIGS = {"default": default_world_config(), "tiny": tiny_world_config()}


def test_same_seed_same_world_and_data():
    a, b = default_world_config(seed=3), default_world_config(seed=3)
    assert a.digest() == b.digest()
    wa, wb = World(a), World(b)
    assert wa.split_meanings("train") == wb.split_meanings("train")
    assert build_lexicons(a) == build_lexicons(b)
    la, lb = build_languages(a), build_languages(b)
    assert corpus(wa, la["sov"], 50, STREAM_PRETRAIN) == corpus(wb, lb["sov"], 50, STREAM_PRETRAIN)


def test_different_seed_different_world():
    a, b = default_world_config(seed=0), default_world_config(seed=1)
    assert a.digest() != b.digest()
    assert World(a).split_meanings("test") != World(b).split_meanings("test")
    assert build_lexicons(a)["en"] != build_lexicons(b)["en"]


def test_splits_are_disjoint_streams_and_labels_balanced():
    world = World(default_world_config())
    train, test = world.split_meanings("train"), world.split_meanings("test")
    assert train[:50] != test[:50]
    counts = Counter(world.label(m) for m in train)
    assert sorted(counts) == [0, 1, 2]
    assert max(counts.values()) / min(counts.values()) < 1.2
    assert all(world.label(m) == m.subject // world.config.nouns_per_category for m in test)


def test_noun_frequencies_are_zipfian_within_category():
    world = World(default_world_config())
    meanings = world.sample(20_000, np.random.default_rng(0))
    counts = Counter(m.subject for m in meanings if world.category(m.subject) == 0)
    freq = sorted(counts.values(), reverse=True)
    assert freq[0] > 5 * freq[-1]  # 1/rank over 12 nouns: top/bottom ~ 12


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_language_round_trips_through_the_meaning(name):
    config = CONFIGS[name]
    world = World(config)
    meanings = world.sample(400, np.random.default_rng(7))
    for language in build_languages(config).values():
        for meaning in meanings:
            assert language.parse(language.sentence(meaning)) == meaning, language.code


def _concepts(config, code, meaning):
    return build_languages(config)[code].realise_concepts(meaning)


def test_transformations_do_what_they_claim():
    base = LanguageSpec("en", shared_fraction=1.0)
    specs = (base, LanguageSpec("sov", word_order="SOV"), LanguageSpec("vso", word_order="VSO"),
             LanguageSpec("adj", adjective="post", determiner="post"), LanguageSpec("post", adposition="post"),
             LanguageSpec("inv", inverted=True))
    config = WorldConfig(languages=specs)
    langs = build_languages(config)
    world = World(config)
    from fisherlab.testbed.world import Meaning

    m = Meaning(subject=0, verb=1, object=13, subject_adjective=2, object_adjective=None, place=3,
                negated=True, subject_definite=True, object_definite=False)
    en = langs["en"].realise_concepts(m)
    assert en == ["def", "adj2", "noun0", "aux", "neg", "verb1", "indef", "noun13", "adp", "def", "place3"]
    assert langs["sov"].realise_concepts(m) == ["def", "adj2", "noun0", "indef", "noun13", "aux", "neg", "verb1",
                                                "adp", "def", "place3"]
    assert langs["vso"].realise_concepts(m)[:3] == ["aux", "neg", "verb1"]
    assert langs["adj"].realise_concepts(m)[:3] == ["noun0", "adj2", "def"]
    assert langs["post"].realise_concepts(m)[-3:] == ["def", "place3", "adp"]
    assert langs["inv"].realise_concepts(m) == en[::-1]
    assert world.label(m) == 0


def test_vocabulary_sharing_is_exactly_as_dialled():
    config = default_world_config()
    lexicons = build_lexicons(config)
    source = lexicons[config.source_language]
    content = content_concepts(config)
    all_other_words = {}
    for spec in config.languages:
        lex = lexicons[spec.code]
        shared_content = [c for c in content if lex[c] == source[c]]
        if spec.code != config.source_language:
            assert len(shared_content) == round(spec.shared_fraction * len(content)), spec.code
            shared_function = [c for c in FUNCTION_CONCEPTS if lex[c] == source[c]]
            assert len(shared_function) == (len(FUNCTION_CONCEPTS) if spec.share_function_words else 0)
        for concept, word in lex.items():
            if word != source[concept]:  # non-anchors are private to one language
                assert word not in all_other_words, (spec.code, word)
                all_other_words[word] = spec.code
    assert len(set(source.values())) == len(source)


def test_config_serialises_and_validates():
    config = default_world_config(seed=5)
    assert WorldConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="word_order"):
        LanguageSpec("xx", word_order="SXO")
    with pytest.raises(ValueError, match="shared_fraction"):
        LanguageSpec("xx", shared_fraction=1.5)
    with pytest.raises(ValueError, match="source_language"):
        replace(config, source_language="zz")
    with pytest.raises(ValueError, match="duplicate"):
        WorldConfig(languages=(LanguageSpec("en"), LanguageSpec("en")))
    with pytest.raises(ValueError, match="preset"):
        world_config("huge")
    with pytest.raises(ValueError, match="unknown language 'zz'"):
        config.language("zz")
    with pytest.raises(ValueError, match="split"):
        World(config).split_meanings("dev")
    with pytest.raises(ValueError, match="not in this language"):
        build_languages(config)["en"].parse("qqq")


def test_importing_the_testbed_does_not_import_torch():
    code = "import sys, fisherlab.testbed, fisherlab.tasks; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_code_switching_replaces_only_content_words_and_only_in_pretraining():
    config = default_world_config()
    world, langs = World(config), build_languages(config)
    source, target = langs["en"], langs["sov"]
    plain = corpus(world, target, 30, STREAM_PRETRAIN)
    assert corpus(world, target, 30, STREAM_PRETRAIN, source, 0.0) == plain
    full = corpus(world, target, 30, STREAM_PRETRAIN, source, 1.0)
    for mixed, original in zip(full, plain, strict=True):
        concepts = [target.concept_of[w] for w in original.split()]
        expected = [source.lexicon[c] if c not in FUNCTION_CONCEPTS else target.lexicon[c] for c in concepts]
        assert mixed.split() == expected  # same order (the target's), source words
    half = corpus(world, target, 200, STREAM_PRETRAIN, source, 0.5)
    switched = sum(a != b for s, p in zip(half, corpus(world, target, 200, STREAM_PRETRAIN), strict=True)
                   for a, b in zip(s.split(), p.split(), strict=True))
    assert switched > 0
    with pytest.raises(ValueError, match="code_switch"):
        LanguageSpec("xx", code_switch=2.0)


def test_deep_world_is_the_default_with_enough_layers_for_nine_permutation_schedules():
    from fisherlab.spec.schedules import count_permutation_schedules

    default, deep = world_config("default"), world_config("deep")
    assert deep.model.num_layers == 6 and default.model.num_layers == 4
    assert replace(deep, model=default.model) == default  # nothing else differs
    assert deep.digest() != default.digest()
    assert count_permutation_schedules(default.model.num_layers) < 9 <= count_permutation_schedules(6)
