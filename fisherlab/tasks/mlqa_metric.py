"""The MLQA metric, following the official ``mlqa_evaluation_v1.py`` (Lewis et al., 2020) exactly.

It is SQuAD's F1 / exact match (``fisherlab.tasks.metrics.qa_scores``) with a
normalisation that depends on the answer language:

1. lower case;
2. remove punctuation: every character whose Unicode category starts with ``P``,
   plus ``string.punctuation`` (SQuAD removes ``string.punctuation`` only);
3. remove articles with a language-specific pattern: en ``a|an|the``, es
   ``un|una|unos|unas|el|la|los|las``, de ``ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des``,
   vi ``của|là|cái|chiếc|những`` (all as ``\\b`` words), ar every ``ال`` (the script's
   pattern ``\\sال^|ال``), none for hi and zh;
4. tokens: whitespace split, except zh (mixed segmentation: each CJK character
   ``[\\u4e00-\\u9fa5]`` and each punctuation character is a token of its own,
   runs of other characters are split on whitespace); re-joined with single spaces.

An answer language outside en, es, de, vi, ar, hi, zh is an error (the script raises too).
"""

from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from collections.abc import Sequence

from fisherlab.tasks.metrics import qa_scores

ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "ar": r"\sال^|ال",
    "hi": None,
    "zh": None,
}
WHITESPACE_LANGUAGES = ("en", "es", "hi", "vi", "de", "ar")
MIXED_SEGMENTATION_LANGUAGES = ("zh",)
_CJK = re.compile(r"[\u4e00-\u9fa5]")


@functools.cache
def punctuation() -> frozenset[str]:
    """Unicode punctuation (categories P*) plus ``string.punctuation`` (built once, ~0.2 s)."""
    return frozenset(chr(i) for i in range(sys.maxunicode)
                     if unicodedata.category(chr(i)).startswith("P")).union(string.punctuation)


def mixed_segmentation(text: str) -> list[str]:
    """Chinese segmentation of the script: CJK and punctuation characters alone, other runs split on spaces."""
    punct = punctuation()
    tokens: list[str] = []
    run = ""
    for char in text:
        if _CJK.search(char) or char in punct:
            tokens.extend(run.split())
            run = ""
            tokens.append(char)
        else:
            run += char
    tokens.extend(run.split())
    return tokens


def normalize_mlqa(text: str, language: str) -> str:
    """The script's ``normalize_answer(text, language)``."""
    if language not in ARTICLES:
        raise ValueError(f"mlqa metric: answer language {language!r} unknown; the MLQA script knows {list(ARTICLES)}")
    punct = punctuation()
    text = "".join(ch for ch in text.lower() if ch not in punct)
    if ARTICLES[language]:
        text = re.sub(ARTICLES[language], " ", text)
    tokens = mixed_segmentation(text) if language in MIXED_SEGMENTATION_LANGUAGES else text.split()
    return " ".join(t for t in tokens if t.strip())


def mlqa_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], language: str) -> dict[str, float]:
    """``{"f1", "exact_match"}`` in percent, as ``mlqa_evaluation_v1.py`` with answer language ``language``."""
    return qa_scores(predictions, references, lambda text: normalize_mlqa(text, language), "mlqa_scores")
