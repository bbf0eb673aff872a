"""Options of a report, the figures it can draw, and the result it returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from fisherlab.errors import FisherlabError

#: Figure name -> one-line description (the order is the order in the report).
FIGURES: dict[str, str] = {
    "trace": "tr(F) curves per method with seed bands (FUN Fig. 3)",
    "trace_validation": "normalised tr(F) and validation metric per group of runs (FUN Fig. 4)",
    "order": "unfreezing order vs the top-down diagonal (FUN Fig. 5)",
    "relative": "performance relative to the baseline method (FUN Fig. 2)",
    "feature_result": "tr(F)-curve features vs the cross-lingual result, with fit and CI",
    "regulariser": "final tr(F) vs source accuracy by regulariser and weight (Stickland & Murray Fig. 1)",
    "two_stage": "two-stage gain vs tr(F) after the source stage (Stickland & Murray Fig. 2)",
    "language_trace": "target-language tr(F) curves, one panel per language",
    "language_relation": "per language: target-language tr(F) feature vs that language's zero-shot result",
    "language_ranking": "per run: languages ranked by target-language tr(F) vs by result",
}

#: Run columns of the regulariser kind and its weight: the run labels (``docs/run-format.md``;
#: older stores get them from ``fisherlab.runs.labels.legacy_labels``). ``regulariser_column`` /
#: ``weight_column`` name other run columns.
REGULARISER_COLUMNS = ("regulariser",)
WEIGHT_COLUMNS = ("regulariser_weight",)
#: Run column with a Fisher penalty's weight on Stickland & Murray's scale (``fpen``, written by
#: ``RunConfig.to_dict`` under ``regulariser.fpen``); the ``regulariser`` figure labels Fisher
#: penalty points with it when the weight column is the default one.
FPEN_COLUMN = "config.regulariser.fpen"


class ReportError(FisherlabError, ValueError):
    """The report cannot be built (no runs, bad option); the message says why."""


@dataclass(frozen=True)
class ReportOptions:
    """What ``build_report`` computes and draws (CLI flags in parentheses).

    baseline: method the relative figure/table compare against (``--baseline``;
        default: ``full`` if present, else ``standard``).
    metric: result metric to keep, e.g. ``f1`` (``--metric``; default: every run's own).
    delta: grouping threshold in result points (``--delta``, FUN footnote 10).
    window: centred moving-average window in probe points (``--window``).
    figures: names from :data:`FIGURES` (``--figures``).
    estimator_policy: ``facet`` (a panel per estimator) or ``refuse`` (skip figures
        that would mix estimators, with the reason) (``--estimators``).
    """

    baseline: str | None = None
    metric: str | None = None
    delta: float = 1.0
    window: int = 5
    figures: tuple[str, ...] = tuple(FIGURES)
    estimator_policy: str = "facet"
    correlation: str = "spearman"
    n_boot: int = 2000
    n_perm: int = 2000
    seed: int = 0
    early_fraction: float = 0.25
    validation_split: str = "validation"
    validation_metric: str | None = None
    two_stage_split: str = "two_stage_gain"
    regulariser_column: str | None = None
    weight_column: str | None = None
    formats: tuple[str, ...] = ("pdf", "png")
    progress: bool = False
    title: str = "fisherlab report"

    def __post_init__(self) -> None:
        figures = tuple(self.figures)
        unknown = [f for f in figures if f not in FIGURES]
        if unknown:
            raise ReportError(f"unknown figure(s) {unknown}; choose from {list(FIGURES)}")
        object.__setattr__(self, "figures", figures)
        if self.estimator_policy not in ("facet", "refuse"):
            raise ReportError(f"estimator_policy must be 'facet' or 'refuse', got {self.estimator_policy!r}")
        if self.correlation not in ("spearman", "pearson", "kendall"):
            raise ReportError(f"correlation must be spearman, pearson or kendall, got {self.correlation!r}")
        if self.window < 1:
            raise ReportError(f"window must be >= 1, got {self.window}")
        if not self.delta >= 0:
            raise ReportError(f"delta must be >= 0, got {self.delta}")
        if self.n_boot < 0 or self.n_perm < 0:
            raise ReportError("n_boot and n_perm must be >= 0")
        formats = tuple(str(f).lower().lstrip(".") for f in self.formats)
        if "png" not in formats or not set(formats) <= {"pdf", "png", "svg"}:
            raise ReportError(f"formats must be among pdf, png, svg and include png (the page embeds it), "
                              f"got {list(self.formats)}")
        object.__setattr__(self, "formats", formats)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> ReportOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown report option(s) {unknown}; known: {sorted(known)}")
        if isinstance(kwargs.get("figures"), str):
            kwargs["figures"] = parse_figures(kwargs["figures"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}


def parse_figures(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"trace,order"`` or ``"all"`` -> figure names (unknown names: :class:`ReportError`)."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    items = [s for s in items if s]
    if not items or items == ["all"]:
        return tuple(FIGURES)
    unknown = [s for s in items if s not in FIGURES]
    if unknown:
        raise ReportError(f"unknown figure(s) {unknown}; choose from {list(FIGURES)} or 'all'")
    return tuple(dict.fromkeys(items))


@dataclass
class ReportResult:
    """What ``build_report`` wrote (paths relative names are under ``out_dir``)."""

    out_dir: Path
    html: Path
    summary_path: Path
    summary: dict[str, Any]
    figures: dict[str, list[Path]] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: pd.DataFrame = field(default_factory=pd.DataFrame)
