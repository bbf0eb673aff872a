"""Task metrics, in percent (as in the papers and in ``results.json``).

``accuracy`` for classification / multiple choice; ``squad_f1`` and
``squad_exact_match`` follow the official SQuAD v1.1 evaluation script
(lower-case, strip punctuation and English articles, collapse whitespace;
max over the gold answers; token-level F1).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Percentage of predictions equal to their reference."""
    if len(predictions) != len(references):
        raise ValueError(f"accuracy: {len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("accuracy: no examples")
    correct = sum(int(p) == int(r) for p, r in zip(predictions, references, strict=True))
    return 100.0 * correct / len(references)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _check(predictions: Sequence[str], references: Sequence[Sequence[str]], name: str) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError(f"{name}: no examples")
    for i, golds in enumerate(references):
        if isinstance(golds, str) or len(golds) == 0:
            raise ValueError(f"{name}: references[{i}] must be a non-empty list of answer strings")


def squad_exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Percentage of predictions that equal (after normalisation) one of their gold answers."""
    _check(predictions, references, "squad_exact_match")
    hits = sum(max(float(normalize_answer(p) == normalize_answer(g)) for g in golds)
               for p, golds in zip(predictions, references, strict=True))
    return 100.0 * hits / len(references)


def squad_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over questions of the best token-level F1 against the gold answers, in percent."""
    _check(predictions, references, "squad_f1")
    total = sum(max(_f1(p, g) for g in golds) for p, golds in zip(predictions, references, strict=True))
    return 100.0 * total / len(references)
