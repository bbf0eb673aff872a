"""Final results of a run, as evaluation code returns them, into ``results.json`` (torch-free).

Evaluation code returns one of three shapes; :func:`scores_by_language` turns each into
``{language: {metric: value}}``:

* ``{"accuracy": 61.4}`` -- the metrics of one language (``task.evaluate`` on one test
  set): stored under ``language`` (the source language unless given);
* ``{"en": {"accuracy": 84.1}, "de": {"accuracy": 70.2}}`` -- metrics per language;
* ``{"en": 84.1, "de": 70.2}`` -- one number per language (needs ``metric``).

:func:`write_scores` writes them: one ``test`` row per language and metric in
``metrics.jsonl`` and ``results.json`` with the headline ``metric`` in ``per_language`` and
every metric in ``per_metric`` (``docs/run-format.md``). ``fisherlab train`` and
:class:`fisherlab.hf.FisherlabRun` both write results through it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fisherlab.runs.schema import RunFormatError

__all__ = ["scores_by_language", "write_scores"]


def _number(value: Any, where: str) -> float:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise RunFormatError(f"results: {where} must be a finite number, got {value!r}")
    return float(value)


def scores_by_language(results: Mapping[str, Any], language: str | None = None,
                       metric: str | None = None) -> dict[str, dict[str, float]]:
    """``results`` in any of the module's three shapes -> ``{language: {metric: value}}``.

    ``language``: where a flat ``{metric: value}`` mapping belongs; ``metric``: the name of
    the numbers of a ``{language: number}`` mapping. A flat mapping is told from a
    per-language one by its values (numbers vs mappings); a mapping of numbers is read as
    per-language only when ``metric`` is given and ``language`` is not."""
    if not isinstance(results, Mapping) or not results:
        raise RunFormatError(f"results: expected a non-empty mapping (metric -> value, or language -> "
                             f"metrics), got {results!r}")
    nested = [isinstance(v, Mapping) for v in results.values()]
    if all(nested):
        return {str(lang): {str(m): _number(v, f"{lang}/{m}") for m, v in metrics.items()}
                for lang, metrics in results.items()}
    if any(nested):
        raise RunFormatError("results: mixes per-language mappings and plain numbers; give either "
                             "{metric: value} for one language or {language: {metric: value}}")
    if metric is not None and language is None:
        return {str(lang): {str(metric): _number(v, str(lang))} for lang, v in results.items()}
    if language is None:
        raise RunFormatError(f"results: {dict(results)!r} are the metrics of one language; say which "
                             "(source_language=...), or give {language: {metric: value}}")
    return {str(language): {str(m): _number(v, str(m)) for m, v in results.items()}}


def headline_metric(scores: Mapping[str, Mapping[str, float]], metric: str | None = None) -> str:
    """``metric`` if every language has it, else the one metric all languages share."""
    shared = set.intersection(*(set(m) for m in scores.values()))
    if metric is not None:
        if metric not in shared:
            lacking = sorted(lang for lang, m in scores.items() if metric not in m)
            raise RunFormatError(f"results: metric {metric!r} missing for {lacking} "
                                 f"(metrics given: {sorted(set().union(*scores.values()))})")
        return metric
    if len(shared) != 1:
        raise RunFormatError(f"results: name the headline metric (metric=...); the languages share "
                             f"{sorted(shared) or 'no metric'}")
    return next(iter(shared))


def write_scores(writer: Any, scores: Mapping[str, Mapping[str, float]], metric: str | None,
                 source_language: str, step: int) -> None:
    """Write ``scores`` (``{language: {metric: value}}``) as the run's results.

    Appends a ``test`` row per language and metric to ``metrics.jsonl`` at ``step`` and writes
    ``results.json`` (``per_language`` = the headline ``metric``, ``per_metric`` = all)."""
    metric = headline_metric(scores, metric)
    per_metric: dict[str, dict[str, float]] = {}
    for language, values in scores.items():
        for name, value in values.items():
            per_metric.setdefault(name, {})[language] = float(value)
            writer.log_metric(step, "test", language, name, float(value))
    writer.write_results(metric=metric, source_language=source_language,
                         per_language=per_metric[metric], per_metric=per_metric)
