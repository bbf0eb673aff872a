"""Task metrics, in percent (as in the papers and in ``results.json``).

``accuracy`` for classification / multiple choice; ``squad_f1`` and
``squad_exact_match`` follow the official SQuAD v1.1 evaluation script
(lower-case, strip punctuation and English articles, collapse whitespace;
max over the gold answers; token-level F1, 0 when no token overlaps). The MLQA
metric (``fisherlab.tasks.mlqa_metric``) differs in normalisation only.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Sequence

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


def token_f1(prediction_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    """Token-overlap F1 of the SQuAD v1.1 / MLQA scripts (0 when nothing overlaps, also when both are empty)."""
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(prediction_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _check(predictions: Sequence[str], references: Sequence[Sequence[str]], name: str) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError(f"{name}: no examples")
    for i, golds in enumerate(references):
        if isinstance(golds, str) or len(golds) == 0:
            raise ValueError(f"{name}: references[{i}] must be a non-empty list of answer strings")


def qa_scores(predictions: Sequence[str], references: Sequence[Sequence[str]],
              normalize: Callable[[str], str], name: str = "qa_scores") -> dict[str, float]:
    """``{"f1", "exact_match"}`` in percent: per question the best over its gold answers, averaged;
    answers compared after ``normalize`` (tokens: its output split on whitespace)."""
    _check(predictions, references, name)
    f1 = exact = 0.0
    for prediction, golds in zip(predictions, references, strict=True):
        pred = normalize(prediction)
        normed = [normalize(g) for g in golds]
        f1 += max(token_f1(pred.split(), g.split()) for g in normed)
        exact += max(float(pred == g) for g in normed)
    return {"f1": 100.0 * f1 / len(references), "exact_match": 100.0 * exact / len(references)}


def squad_exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Percentage of predictions that equal (after normalisation) one of their gold answers."""
    return qa_scores(predictions, references, normalize_answer, "squad_exact_match")["exact_match"]


def squad_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over questions of the best token-level F1 against the gold answers, in percent."""
    return qa_scores(predictions, references, normalize_answer, "squad_f1")["f1"]
