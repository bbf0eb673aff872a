"""The :class:`RunSet`: tidy pandas frames of many runs and the problems met reading them.

Built by :func:`fisherlab.analysis.loading.load_runs`; every analysis function takes one.
Columns of each frame: ``docs/analysis.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fisherlab.analysis.target_rows import empty_target_fisher

__all__ = ["RunSet"]


@dataclass
class RunSet:
    """Tidy frames of many runs (columns: see ``docs/analysis.md``) and the problems met."""

    runs: pd.DataFrame
    fisher: pd.DataFrame
    schedule: pd.DataFrame
    metrics: pd.DataFrame
    results: pd.DataFrame
    problems: pd.DataFrame
    # tr(F) rows measured on target-language inputs (fisher.jsonl rows with a `language`);
    # ``fisher`` holds the source-data rows only
    target_fisher: pd.DataFrame = field(default_factory=empty_target_fisher)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def run_ids(self) -> list[str]:
        return self.runs["run_id"].tolist()

    def select(self, run_ids: Iterable[str] | pd.Series | np.ndarray) -> RunSet:
        """A RunSet restricted to ``run_ids`` (order of ``runs`` kept); problems filtered too."""
        if isinstance(run_ids, pd.Series) and run_ids.dtype == bool:
            run_ids = self.runs.loc[run_ids.to_numpy(), "run_id"]
        wanted = set(run_ids)
        unknown = wanted - set(self.runs["run_id"])
        if unknown:
            raise KeyError(f"unknown run_id(s): {sorted(unknown)[:5]}")

        def pick(frame: pd.DataFrame, column: str = "run_id") -> pd.DataFrame:
            return frame.loc[frame[column].isin(wanted)].reset_index(drop=True)

        return RunSet(runs=pick(self.runs), fisher=pick(self.fisher), schedule=pick(self.schedule),
                      metrics=pick(self.metrics), results=pick(self.results),
                      problems=pick(self.problems, "run"), target_fisher=pick(self.target_fisher))

    def where(self, **conditions: Any) -> RunSet:
        """Runs whose ``runs`` columns equal the given values (a list/tuple/set means "one of")."""
        mask = np.ones(len(self.runs), dtype=bool)
        for column, value in conditions.items():
            if column not in self.runs.columns:
                raise KeyError(f"runs has no column {column!r}; it has {list(self.runs.columns)}")
            values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
            mask &= self.runs[column].isin(list(values)).to_numpy()
        return self.select(self.runs.loc[mask, "run_id"])

    def __repr__(self) -> str:
        return (f"RunSet({len(self.runs)} runs, {len(self.fisher)} fisher rows, "
                f"{len(self.schedule)} schedule rows, {len(self.metrics)} metric rows, "
                f"{len(self.results)} result rows, {len(self.problems)} problems)")
