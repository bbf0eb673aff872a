"""The world: settings, a shared meaning space and a probabilistic grammar over it.

Meanings are drawn first (Zipfian noun frequencies, word-specific preferences
drawn from a Dirichlet), then realised by each language (``languages.py``).
Because every language expresses the same meaning distribution, word
distributions are identifiable across languages, which is what lets a small
encoder align them (see ``docs/testbed.md``).

Everything here is pure numpy/python; randomness comes from generators seeded by
``(config.seed, stream, ...)`` so that each consumer owns its own stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

WORD_ORDERS = ("SVO", "SOV", "VSO", "VOS", "OVS", "OSV")
SIDES = ("pre", "post")
FORMAT_VERSION = 1

# Seed streams: each consumer of randomness gets its own generator.
STREAM_STRUCTURE, STREAM_LEXICON, STREAM_PRETRAIN, STREAM_ADAPTER, STREAM_TASK = range(5)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class LanguageSpec:
    """How one language realises meanings; every field is a dial of distance to the source.

    ``shared_fraction`` is the fraction of content words (nouns, verbs, adjectives,
    places) whose surface form is the source language's (anchor tokens);
    ``share_function_words`` does the same for determiners, the auxiliary, the
    negation and the adposition. ``pretrain_sentences`` is its share of the MLM
    pretraining corpus (small = held out, so its language adapter has to do the
    work); ``adapter_sentences`` is the corpus its language adapter is trained on.
    ``code_switch`` is the probability that a content word of one of its
    *pretraining* sentences is replaced by the source word for the same concept
    (code-switching, a bilingual-dictionary-like signal that lets private words
    align); task data and adapter corpora are never code-switched.
    """

    code: str
    word_order: str = "SVO"
    adjective: str = "pre"
    determiner: str = "pre"
    adposition: str = "pre"
    inverted: bool = False
    shared_fraction: float = 0.0
    share_function_words: bool = True
    pretrain_sentences: int = 12_000
    adapter_sentences: int = 12_000
    code_switch: float = 0.0

    def __post_init__(self) -> None:
        if not self.code or not self.code.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"LanguageSpec.code: expected a short alphanumeric code, got {self.code!r}")
        if self.word_order not in WORD_ORDERS:
            raise ValueError(f"LanguageSpec({self.code}).word_order: expected one of {WORD_ORDERS}, got {self.word_order!r}")
        for name in ("adjective", "determiner", "adposition"):
            if getattr(self, name) not in SIDES:
                raise ValueError(f"LanguageSpec({self.code}).{name}: expected one of {SIDES}, got {getattr(self, name)!r}")
        if not 0.0 <= self.shared_fraction <= 1.0:
            raise ValueError(f"LanguageSpec({self.code}).shared_fraction: expected a value in [0, 1], got {self.shared_fraction}")
        if not 0.0 <= self.code_switch <= 1.0:
            raise ValueError(f"LanguageSpec({self.code}).code_switch: expected a value in [0, 1], got {self.code_switch}")
        if self.pretrain_sentences < 0 or self.adapter_sentences < 0:
            raise ValueError(f"LanguageSpec({self.code}): sentence counts must be >= 0")


#: The testbed encoder's name: run labels (``model``) and the saved adapters' ``model_name``.
BASE_NAME = "testbed-encoder"


@dataclass(frozen=True)
class ModelSpec:
    """The tiny BERT-style encoder pretrained on the world."""

    num_layers: int = 4
    hidden: int = 64
    heads: int = 4
    intermediate: int = 256
    max_positions: int = 64
    dropout: float = 0.1


@dataclass(frozen=True)
class TrainSpec:
    """An MLM training budget (used for pretraining and for language adapters)."""

    steps: int
    batch_size: int = 128
    lr: float = 2e-3
    mask_prob: float = 0.15
    pair_prob: float = 0.5
    # Language adapters only:
    reduction_factor: int = 2
    invertible: bool = True  # seq_bn_inv (MAD-X) rather than seq_bn
    lexical: bool = False  # the adapter carries trained embeddings for its language's private tokens
    lexical_lr: float | None = None  # learning rate of those embeddings (None: ``lr``)
    # torch intra-op threads this training runs on. Part of the world: float results depend
    # on it (the split of each reduction), so a world trains the same on any machine.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or self.reduction_factor < 1:
            raise ValueError(f"TrainSpec: expected steps >= 0, batch_size >= 1, lr > 0, reduction_factor >= 1; "
                             f"got {self.steps}, {self.batch_size}, {self.lr}, {self.reduction_factor}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"TrainSpec.threads: expected an integer >= 1, got {self.threads!r}")
        if self.lexical_lr is not None and self.lexical_lr <= 0:
            raise ValueError(f"TrainSpec.lexical_lr: expected > 0 or None, got {self.lexical_lr}")


@dataclass(frozen=True)
class TaskSpec:
    """The labelled task and the task-adapter settings that suit this world."""

    name: str = "agent"
    train_size: int = 4_000
    validation_size: int = 500
    test_size: int = 1_000  # parallel: the same meanings in every language
    # Recommended task-adapter training (what benchmarks/testbed_quality.py uses).
    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-3
    reduction_factor: int = 2


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a testbed; its hash names the cache directory."""

    languages: tuple[LanguageSpec, ...]
    source_language: str = "en"
    seed: int = 0
    categories: int = 3
    nouns_per_category: int = 12
    verbs: int = 16
    adjectives: int = 12
    places: int = 6
    zipf_exponent: float = 1.0
    dirichlet_alpha: float = 0.3
    p_adjective: float = 0.4
    p_place: float = 0.3
    p_negation: float = 0.2
    p_definite: float = 0.5
    model: ModelSpec = field(default_factory=ModelSpec)
    pretrain: TrainSpec = field(default_factory=lambda: TrainSpec(steps=2_000))
    adapters: TrainSpec = field(default_factory=lambda: TrainSpec(steps=150, lr=1e-3, pair_prob=0.0))
    task: TaskSpec = field(default_factory=TaskSpec)

    def __post_init__(self) -> None:
        codes = [spec.code for spec in self.languages]
        if len(set(codes)) != len(codes):
            raise ValueError(f"WorldConfig.languages: duplicate language codes in {codes}")
        if self.source_language not in codes:
            raise ValueError(f"WorldConfig.source_language: {self.source_language!r} is not one of the languages {codes}")
        for name in ("categories", "nouns_per_category", "verbs", "adjectives", "places"):
            if getattr(self, name) < 1:
                raise ValueError(f"WorldConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.categories < 2:
            raise ValueError("WorldConfig.categories: the task needs at least 2 categories")

    @property
    def language_codes(self) -> tuple[str, ...]:
        return tuple(spec.code for spec in self.languages)

    def language(self, code: str) -> LanguageSpec:
        for spec in self.languages:
            if spec.code == code:
                return spec
        raise ValueError(f"unknown language {code!r}; this world has {list(self.language_codes)}")

    def to_dict(self) -> dict[str, Any]:
        data = {"format": FORMAT_VERSION, **dataclasses.asdict(self)}
        for key in ("pretrain", "adapters"):
            if data[key]["threads"] == 1:  # the default: worlds from before the field keep their hash
                del data[key]["threads"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        data = dict(data)
        fmt = data.pop("format", FORMAT_VERSION)
        if fmt != FORMAT_VERSION:
            raise ValueError(f"WorldConfig.format: expected {FORMAT_VERSION}, got {fmt}")
        try:
            data["languages"] = tuple(LanguageSpec(**spec) for spec in data["languages"])
            data["model"] = ModelSpec(**data.get("model", {}))
            data["pretrain"] = TrainSpec(**data["pretrain"])
            data["adapters"] = TrainSpec(**data["adapters"])
            data["task"] = TaskSpec(**data.get("task", {}))
            return cls(**data)
        except (KeyError, TypeError) as err:
            raise ValueError(f"WorldConfig: malformed settings ({err})") from err

    def digest(self) -> str:
        """A short stable hash of all settings (including the seed): the cache key."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_world_config(seed: int = 0) -> WorldConfig:
    """The embedded default world used by the demo, notebooks and benchmarks.

    ``en`` is the English-heavy source. Seen in pretraining (12,000 sentences
    each, 30% of content words shared with ``en``): ``adj`` (adjectives and
    determiners after the noun), ``sov`` (verb-final, postpositions), ``vso``
    (verb-initial), ``lex`` (vocabulary remapping only). Held out of pretraining
    entirely (the MAD-X case: the base never saw their private words): ``few``
    (verb-final, adjective after the noun) and ``unk`` (vocabulary remapping
    only). ``inv`` is a control: fully inverted with no shared tokens at all.
    Language adapters (``seq_bn_inv``, 400 MLM steps) carry lexical tables:
    trained embeddings for their language's private tokens (``lexical.py``).
    Every training runs on 1 torch thread (``TrainSpec.threads``; the language adapters
    can train in parallel processes).
    """
    seen = _seen_languages()
    languages = (
        *seen[:-1],
        LanguageSpec("few", word_order="SOV", adjective="post", shared_fraction=0.3, pretrain_sentences=0),
        LanguageSpec("unk", shared_fraction=0.3, pretrain_sentences=0),
        seen[-1],
    )
    adapters = TrainSpec(steps=400, lr=1e-3, pair_prob=0.0, lexical=True, lexical_lr=1e-2)
    return WorldConfig(languages=languages, seed=seed, adapters=adapters)


def _seen_languages() -> tuple[LanguageSpec, ...]:
    """``en``, ``adj``, ``sov``, ``vso``, ``lex`` and the control ``inv``: the languages both defaults share."""
    return (
        LanguageSpec("en", shared_fraction=1.0, pretrain_sentences=40_000),
        LanguageSpec("adj", adjective="post", determiner="post", shared_fraction=0.3),
        LanguageSpec("sov", word_order="SOV", adposition="post", shared_fraction=0.3),
        LanguageSpec("vso", word_order="VSO", shared_fraction=0.3),
        LanguageSpec("lex", shared_fraction=0.3),
        LanguageSpec("inv", inverted=True, shared_fraction=0.0, share_function_words=False),
    )


def old_default_world_config(seed: int = 0) -> WorldConfig:
    """The default world of issue 5 (kept for comparison): language adapters do not matter in it.

    ``en`` is the English-heavy source. ``adj`` (adjectives and determiners after
    the noun), ``sov`` (verb-final with postpositions) and ``vso`` (verb-initial)
    change order and share 30% of content words; ``lex`` only remaps the
    vocabulary (30% shared); ``few`` is verb-final, adjective-final and mostly
    held out of pretraining (500 sentences); ``inv`` is a control: fully
    inverted with no shared tokens at all. Language adapters: 150 steps, no
    lexical tables.
    """
    seen = _seen_languages()
    few = LanguageSpec("few", word_order="SOV", adjective="post", shared_fraction=0.3, pretrain_sentences=500)
    return WorldConfig(languages=(*seen[:-1], few, seen[-1]), seed=seed)


def tiny_world_config(seed: int = 0) -> WorldConfig:
    """A world that builds in seconds: for tests, not for measuring transfer."""
    languages = (
        LanguageSpec("en", shared_fraction=1.0, pretrain_sentences=300, adapter_sentences=100),
        LanguageSpec("sov", word_order="SOV", adjective="post", adposition="post", shared_fraction=0.3,
                     pretrain_sentences=100, adapter_sentences=100),
        LanguageSpec("inv", inverted=True, share_function_words=False, pretrain_sentences=100,
                     adapter_sentences=100),
    )
    return WorldConfig(
        languages=languages, seed=seed, nouns_per_category=3, verbs=4, adjectives=3, places=2,
        model=ModelSpec(num_layers=2, hidden=16, heads=2, intermediate=32, max_positions=48, dropout=0.0),
        pretrain=TrainSpec(steps=4, batch_size=16),
        adapters=TrainSpec(steps=2, batch_size=16, lr=1e-3, pair_prob=0.0),
        task=TaskSpec(train_size=64, validation_size=32, test_size=32, steps=4, batch_size=16),
    )


def deep_world_config(seed: int = 0) -> WorldConfig:
    """The default world with a 6-layer encoder: for studies that need more layers.

    The FUN paper's permutation study (footnote 9: top layer first, the next from
    ``{L-2, L-3}``, the rest in random order, top-down excluded) has only
    ``2 * (L-2)! - 1`` distinct schedules: 3 for the default 4-layer encoder, 11 for
    6 layers, so its 9 sampled schedules need at least 5 layers. Everything else
    (languages, corpora, lexical language adapters, task) is the default world's.
    """
    default = default_world_config(seed)
    return replace(default, model=replace(default.model, num_layers=6))


WORLD_PRESETS = {"default": default_world_config, "deep": deep_world_config, "tiny": tiny_world_config}


def world_config(name: str, seed: int = 0) -> WorldConfig:
    """A preset by name (``default``, ``deep`` or ``tiny``)."""
    if name not in WORLD_PRESETS:
        raise ValueError(f"world: unknown preset {name!r}; expected one of {sorted(WORLD_PRESETS)}")
    return WORLD_PRESETS[name](seed=seed)


@dataclass(frozen=True)
class Meaning:
    """One proposition: who does what to whom, optionally where, optionally negated.

    Noun indices run over all ``categories * nouns_per_category`` nouns; the
    category of noun ``i`` is ``i // nouns_per_category``.
    """

    subject: int
    verb: int
    object: int
    subject_adjective: int | None = None
    object_adjective: int | None = None
    place: int | None = None
    negated: bool = False
    subject_definite: bool = True
    object_definite: bool = True


def _zipf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _sample_rows(cumulative: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row index, from row-wise cumulative probabilities."""
    u = rng.random(len(rows))
    picked = (cumulative[rows] < u[:, None]).sum(axis=1)
    return np.minimum(picked, cumulative.shape[1] - 1)


class World:
    """The meaning distribution of a config: who prefers what, and how to sample it."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        c = config
        self.num_nouns = c.categories * c.nouns_per_category
        rng = np.random.default_rng([c.seed, STREAM_STRUCTURE])
        alpha = c.dirichlet_alpha
        # Zipfian frequency within each category, in a random rank order per category.
        zipf = _zipf(c.nouns_per_category, c.zipf_exponent)
        self.noun_given_category = np.zeros((c.categories, self.num_nouns))
        for cat in range(c.categories):
            ranks = rng.permutation(c.nouns_per_category)
            self.noun_given_category[cat, cat * c.nouns_per_category:(cat + 1) * c.nouns_per_category] = zipf[ranks]
        noun_prior = _zipf(self.num_nouns, c.zipf_exponent)[rng.permutation(self.num_nouns)]
        self.verb_given_subject = rng.dirichlet(np.full(c.verbs, alpha), size=self.num_nouns)
        # Objects: Dirichlet preferences per verb, tilted towards frequent nouns.
        raw = rng.dirichlet(np.full(self.num_nouns, alpha), size=c.verbs) * noun_prior
        self.object_given_verb = raw / raw.sum(axis=1, keepdims=True)
        self.adjective_given_noun = rng.dirichlet(np.full(c.adjectives, alpha), size=self.num_nouns)
        self.place_given_verb = rng.dirichlet(np.full(c.places, alpha), size=c.verbs)

    def category(self, noun: int) -> int:
        return noun // self.config.nouns_per_category

    def label(self, meaning: Meaning) -> int:
        """The task label: the category of the grammatical subject (the agent)."""
        return self.category(meaning.subject)

    def sample(self, n: int, rng: np.random.Generator) -> list[Meaning]:
        """``n`` meanings; subject categories are balanced (uniform) so chance is 1/categories."""
        c = self.config
        cat = rng.integers(0, c.categories, n)
        subject = _sample_rows(np.cumsum(self.noun_given_category, 1), cat, rng)
        verb = _sample_rows(np.cumsum(self.verb_given_subject, 1), subject, rng)
        obj = _sample_rows(np.cumsum(self.object_given_verb, 1), verb, rng)
        adj_cum = np.cumsum(self.adjective_given_noun, 1)
        subj_adj = _sample_rows(adj_cum, subject, rng)
        obj_adj = _sample_rows(adj_cum, obj, rng)
        place = _sample_rows(np.cumsum(self.place_given_verb, 1), verb, rng)
        has_subj_adj = rng.random(n) < c.p_adjective
        has_obj_adj = rng.random(n) < c.p_adjective
        has_place = rng.random(n) < c.p_place
        negated = rng.random(n) < c.p_negation
        subj_def = rng.random(n) < c.p_definite
        obj_def = rng.random(n) < c.p_definite
        return [
            Meaning(
                subject=int(subject[i]), verb=int(verb[i]), object=int(obj[i]),
                subject_adjective=int(subj_adj[i]) if has_subj_adj[i] else None,
                object_adjective=int(obj_adj[i]) if has_obj_adj[i] else None,
                place=int(place[i]) if has_place[i] else None,
                negated=bool(negated[i]), subject_definite=bool(subj_def[i]), object_definite=bool(obj_def[i]),
            )
            for i in range(n)
        ]

    def split_meanings(self, split: str) -> list[Meaning]:
        """The task's meanings for ``split`` (shared by all languages: the test set is parallel)."""
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        t = self.config.task
        size = {"train": t.train_size, "validation": t.validation_size, "test": t.test_size}[split]
        rng = np.random.default_rng([self.config.seed, STREAM_TASK, SPLITS.index(split)])
        return self.sample(size, rng)
