"""Languages: controlled transformations that realise a meaning as a sentence, and parse it back.

A sentence is built from constituents in *concept* space (``noun3``, ``verb1``,
``adj0``, ``place2``, ``def``/``indef``, ``aux``, ``neg``, ``adp``), ordered by the
language's dials (word order, adjective/determiner/adposition side, full
inversion), then lexicalised through the language's own vocabulary. Words shared
with the source language are anchors; all other words are disjoint, so they get
disjoint token ids. ``parse`` inverts ``realise`` exactly (tests round-trip every
language through the meaning representation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fisherlab.testbed.world import STREAM_LEXICON, LanguageSpec, Meaning, World, WorldConfig

FUNCTION_CONCEPTS = ("def", "indef", "aux", "neg", "adp")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def content_concepts(config: WorldConfig) -> list[str]:
    nouns = config.categories * config.nouns_per_category
    return ([f"noun{i}" for i in range(nouns)] + [f"verb{i}" for i in range(config.verbs)]
            + [f"adj{i}" for i in range(config.adjectives)] + [f"place{i}" for i in range(config.places)])


def _new_word(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        syllables = int(rng.integers(2, 4))
        word = "".join(_CONSONANTS[rng.integers(len(_CONSONANTS))] + _VOWELS[rng.integers(len(_VOWELS))]
                       for _ in range(syllables))
        if word not in taken:
            taken.add(word)
            return word


def build_lexicons(config: WorldConfig) -> dict[str, dict[str, str]]:
    """Concept -> word for every language; anchors reuse the source language's word."""
    rng = np.random.default_rng([config.seed, STREAM_LEXICON])
    content = content_concepts(config)
    taken: set[str] = set()
    source = {concept: _new_word(rng, taken) for concept in [*content, *FUNCTION_CONCEPTS]}
    lexicons = {config.source_language: source}
    for spec in config.languages:
        if spec.code == config.source_language:
            continue
        n_shared = int(round(spec.shared_fraction * len(content)))
        shared = set(np.asarray(content)[rng.permutation(len(content))[:n_shared]].tolist())
        if spec.share_function_words:
            shared |= set(FUNCTION_CONCEPTS)
        lexicons[spec.code] = {c: source[c] if c in shared else _new_word(rng, taken)
                               for c in [*content, *FUNCTION_CONCEPTS]}
    return lexicons


class Language:
    """One language: its spec (the dials) and its lexicon (concept -> word)."""

    def __init__(self, spec: LanguageSpec, lexicon: dict[str, str]) -> None:
        self.spec = spec
        self.lexicon = dict(lexicon)
        self.concept_of = {word: concept for concept, word in self.lexicon.items()}
        if len(self.concept_of) != len(self.lexicon):
            raise ValueError(f"Language {spec.code}: lexicon is not one-to-one")

    @property
    def code(self) -> str:
        return self.spec.code

    @property
    def words(self) -> list[str]:
        return list(self.lexicon.values())

    def _noun_phrase(self, noun: str, adjective: str | None, definite: bool) -> list[str]:
        phrase = [noun]
        if adjective is not None:
            phrase = [adjective, noun] if self.spec.adjective == "pre" else [noun, adjective]
        det = "def" if definite else "indef"
        return [det, *phrase] if self.spec.determiner == "pre" else [*phrase, det]

    def realise_concepts(self, meaning: Meaning) -> list[str]:
        """The sentence in concept space, after all ordering dials."""
        subj = self._noun_phrase(f"noun{meaning.subject}", _opt("adj", meaning.subject_adjective),
                                 meaning.subject_definite)
        obj = self._noun_phrase(f"noun{meaning.object}", _opt("adj", meaning.object_adjective),
                                meaning.object_definite)
        verb = ["aux", "neg", f"verb{meaning.verb}"] if meaning.negated else [f"verb{meaning.verb}"]
        parts = {"S": subj, "V": verb, "O": obj}
        concepts = [c for role in self.spec.word_order for c in parts[role]]
        if meaning.place is not None:
            place = self._noun_phrase(f"place{meaning.place}", None, True)
            concepts += ["adp", *place] if self.spec.adposition == "pre" else [*place, "adp"]
        return concepts[::-1] if self.spec.inverted else concepts

    def realise(self, meaning: Meaning) -> list[str]:
        return [self.lexicon[c] for c in self.realise_concepts(meaning)]

    def sentence(self, meaning: Meaning) -> str:
        return " ".join(self.realise(meaning))

    def parse(self, sentence: str | Sequence[str]) -> Meaning:
        """Recover the meaning of a sentence of this language (the inverse of ``realise``)."""
        words = sentence.split() if isinstance(sentence, str) else list(sentence)
        unknown = [w for w in words if w not in self.concept_of]
        if unknown:
            raise ValueError(f"parse({self.code}): words not in this language: {unknown}")
        concepts = [self.concept_of[w] for w in words]
        if self.spec.inverted:
            concepts = concepts[::-1]
        place = None
        if "adp" in concepts:
            at = concepts.index("adp")
            span = slice(at, at + 3) if self.spec.adposition == "pre" else slice(at - 2, at + 1)
            pp = concepts[span]
            place = int(next(c for c in pp if c.startswith("place"))[5:])
            del concepts[span]
        negated = "neg" in concepts
        verb = int(next(c for c in concepts if c.startswith("verb"))[4:])
        rest = [c for c in concepts if c not in ("aux", "neg") and not c.startswith("verb")]
        phrases = _split_noun_phrases(rest, self.spec.determiner)
        if len(phrases) != 2:
            raise ValueError(f"parse({self.code}): expected two noun phrases in {words}")
        first_is_subject = self.spec.word_order.index("S") < self.spec.word_order.index("O")
        subj, obj = phrases if first_is_subject else phrases[::-1]
        return Meaning(subject=subj[0], verb=verb, object=obj[0], subject_adjective=subj[1],
                       object_adjective=obj[1], place=place, negated=negated,
                       subject_definite=subj[2], object_definite=obj[2])


def _opt(prefix: str, index: int | None) -> str | None:
    return None if index is None else f"{prefix}{index}"


def _split_noun_phrases(concepts: list[str], determiner_side: str) -> list[tuple[int, int | None, bool]]:
    """(noun, adjective, definite) per noun phrase; determiners delimit phrases."""
    phrases: list[list[str]] = []
    current: list[str] = []
    for c in concepts:
        if c in ("def", "indef") and determiner_side == "pre" and current:
            phrases.append(current)
            current = []
        current.append(c)
        if c in ("def", "indef") and determiner_side == "post":
            phrases.append(current)
            current = []
    if current:
        phrases.append(current)
    out = []
    for phrase in phrases:
        noun = next(int(c[4:]) for c in phrase if c.startswith("noun"))
        adj = next((int(c[3:]) for c in phrase if c.startswith("adj")), None)
        out.append((noun, adj, "def" in phrase))
    return out


def build_languages(config: WorldConfig) -> dict[str, Language]:
    """Every language of the world, keyed by code (source first, in config order)."""
    lexicons = build_lexicons(config)
    return {spec.code: Language(spec, lexicons[spec.code]) for spec in config.languages}


def corpus(world: World, language: Language, n: int, stream: int, switch_to: Language | None = None,
           switch_prob: float = 0.0) -> list[str]:
    """``n`` unlabelled sentences of ``language`` from its own seeded stream (MLM data).

    With ``switch_to``, each content word is replaced by ``switch_to``'s word for
    the same concept with probability ``switch_prob`` (code-switching).
    """
    index = world.config.language_codes.index(language.code)
    rng = np.random.default_rng([world.config.seed, stream, index])
    meanings = world.sample(n, rng)
    if switch_to is None or switch_prob <= 0.0:
        return [language.sentence(m) for m in meanings]
    sentences = []
    for meaning in meanings:
        concepts = language.realise_concepts(meaning)
        switch = rng.random(len(concepts)) < switch_prob
        sentences.append(" ".join(
            switch_to.lexicon[c] if flip and c not in FUNCTION_CONCEPTS else language.lexicon[c]
            for c, flip in zip(concepts, switch, strict=True)))
    return sentences
