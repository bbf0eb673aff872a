"""The one measurement record: per-block tr(F) with standard errors and provenance.

:func:`fisherlab.fisher.trace_fisher` returns it for a set of batches; the
:class:`fisherlab.fisher.FisherProbe` returns it for a training step (``step`` set,
combined over ranks under DDP); the run store takes its rows (``to_records``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FisherMeasurement:
    """Per-block tr(F) estimates (``traces[block]``) with standard errors (``stderr[block]``,
    NaN when unknown), the number of examples, provenance (``meta``: estimator, ...), each
    block's layer index (None for head/extra blocks), whether each block was trainable when
    measured, and the training step (None outside training)."""

    traces: dict[str, float]
    stderr: dict[str, float]
    n_examples: int
    meta: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, int | None] = field(default_factory=dict)
    trainable: dict[str, bool] = field(default_factory=dict)
    step: int | None = None

    @property
    def blocks(self) -> list[str]:
        return list(self.traces)

    def to_records(self, trainable: Mapping[str, bool] | Iterable[str] | None = None, *,
                   with_estimator: bool = False) -> list[dict[str, Any]]:
        """One run-store row per block: ``{block, layer, trace, stderr, n_examples, trainable}``
        (plus the provenance ``estimator`` and ``precision`` with ``with_estimator=True``, and
        ``nonfinite: True`` on a row whose trace is NaN or infinite).

        ``trainable`` overrides the flags recorded at measurement time: a mapping block ->
        flag, or the names of the trainable blocks."""
        if trainable is None:
            flags: Mapping[str, bool] = self.trainable
        elif isinstance(trainable, Mapping):
            flags = trainable
        else:
            flags = {name: True for name in trainable}
        rows = []
        for name, value in self.traces.items():
            row = {"block": name, "layer": self.layers.get(name), "trace": float(value),
                   "stderr": float(self.stderr.get(name, math.nan)), "n_examples": int(self.n_examples),
                   "trainable": bool(flags.get(name, False))}
            if with_estimator:
                row["estimator"] = self.meta.get("estimator")
                row["precision"] = self.meta.get("precision")
            if not math.isfinite(row["trace"]):
                row["nonfinite"] = True
            rows.append(row)
        return rows

    def mean_over(self, names: Iterable[str]) -> float:
        """Mean trace over ``names`` (the paper's AGGAVG over trainable blocks); NaN if none."""
        values = [self.traces[n] for n in names if n in self.traces]
        return float(sum(values) / len(values)) if values else math.nan


__all__ = ["FisherMeasurement"]
