"""Unlabelled target-language input sets for the probe: a fixed seeded subset per language.

The true Fisher ``E_x E_{y~p(y|x)} ||grad log p(y|x)||^2`` samples its labels from the
model, so it can be measured on inputs that carry no labels at all -- e.g. the test or
validation inputs of each target language, which a zero-shot transfer setting has. A
:class:`LanguageSet` is one such set: a map-style dataset, its collate function and a
fixed subset of its indices drawn once from ``(seed, language)`` -- the same examples
at every probe step, so a per-language curve follows the model, not the sample.
Label fields (:data:`fisherlab.torch_utils.LABEL_KEYS`) are removed from every batch:
whatever labels the set holds, the measurement cannot see them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fisherlab.spec.estimators import (
    LABEL_FREE_ESTIMATORS,  # re-exported: one list of estimator names
)
from fisherlab.torch_utils import LABEL_KEYS, mix_seed


def language_seed(seed: int, language: str) -> int:
    """A seed for ``language`` (stable across processes: crc32 of the name, not ``hash``)."""
    return mix_seed(seed, zlib.crc32(language.encode("utf-8")), 0x7A26E7)


def fixed_subset(n: int, size: int | None, seed: int, language: str) -> list[int]:
    """``size`` distinct indices of ``range(n)`` drawn once from ``(seed, language)`` (all of
    them, in a seeded order, when ``size`` is None or >= n)."""
    gen = torch.Generator().manual_seed(language_seed(seed, language))
    order = torch.randperm(n, generator=gen).tolist()
    return order if size is None else order[:size]


@dataclass
class LanguageSet:
    """One target language's probe inputs: ``indices`` into ``dataset`` (fixed), collated by
    ``collate_fn`` (None: ``torch.utils.data.default_collate``)."""

    language: str
    dataset: Any
    indices: list[int]
    collate_fn: Callable[[list[Any]], Any] | None = None

    def batch_indices(self, batch_size: int) -> list[list[int]]:
        """The fixed subset cut into batches of ``batch_size`` (the last may be shorter)."""
        return [self.indices[i:i + batch_size] for i in range(0, len(self.indices), batch_size)]

    def collate(self, idx: list[int]) -> dict[str, Any]:
        """The batch of examples ``idx`` without label fields."""
        examples = [self.dataset[j] for j in idx]
        batch = self.collate_fn(examples) if self.collate_fn is not None else \
            torch.utils.data.default_collate(examples)
        if hasattr(batch, "data") and isinstance(batch.data, dict):  # BatchEncoding
            batch = dict(batch.data)
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS}


def make_language_set(language: str, dataset: Any, collate_fn: Any = None, n_examples: int | None = None,
                      seed: int = 0) -> LanguageSet:
    """Check ``dataset`` (map-style, non-empty) and draw its fixed subset of ``n_examples``."""
    if not isinstance(language, str) or not language:
        raise ValueError(f"FisherProbe.add_language: language must be a non-empty name, got {language!r}")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise ValueError(f"FisherProbe.add_language({language!r}): the dataset must be map-style "
                         f"(len + indexing), got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"FisherProbe.add_language({language!r}): the dataset is empty")
    if n_examples is not None and (isinstance(n_examples, bool) or not isinstance(n_examples, int)
                                   or n_examples <= 0):
        raise ValueError(f"FisherProbe.add_language({language!r}): n_examples must be a positive integer "
                         f"or None, got {n_examples!r}")
    return LanguageSet(language, dataset, fixed_subset(len(dataset), n_examples, seed, language), collate_fn)


__all__ = ["LABEL_FREE_ESTIMATORS", "LanguageSet", "fixed_subset", "language_seed", "make_language_set"]
