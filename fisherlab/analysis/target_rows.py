"""The tidy frame of target-language tr(F) rows (``RunSet.target_fisher``; torch-free).

``fisher.jsonl`` rows with a ``language`` were measured on that target language's
unlabelled inputs; :func:`fisherlab.analysis.load_runs` keeps them apart from the source
rows (``RunSet.fisher``) so every source-only analysis is unchanged by them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TARGET_FISHER_COLUMNS = ["run_id", "language", "step", "block", "layer", "trace", "stderr", "trainable",
                         "n_examples", "estimator"]


def empty_target_fisher() -> pd.DataFrame:
    """An empty frame with the :data:`TARGET_FISHER_COLUMNS`."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in TARGET_FISHER_COLUMNS})


def target_fisher_frame(rows: pd.DataFrame, id_array: np.ndarray) -> pd.DataFrame:
    """The target-language rows of the raw fisher frame, tidy (sorted by run, language, step, layer)."""
    if rows.empty:
        return empty_target_fisher()
    rows = rows.assign(_layer=rows["layer"].to_numpy(dtype=float, na_value=np.inf))
    rows = rows.sort_values(["run", "language", "step", "_layer", "block"], kind="stable")
    frame = pd.DataFrame({"run_id": pd.array(id_array[rows["run"].to_numpy()], dtype="str")})
    for column in TARGET_FISHER_COLUMNS[1:]:
        frame[column] = rows[column].to_numpy() if column in ("step", "trace", "stderr") else rows[column].array
    return frame
