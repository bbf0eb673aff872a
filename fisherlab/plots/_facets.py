"""Panels shared by every figure: which columns make a panel, the grid, titles.

Also the estimator rule: curves measured with different tr(F) estimators are
never drawn into one panel; they are faceted by estimator or refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fisherlab.errors import FisherlabError
from fisherlab.plots.figure import PaperFigure
from fisherlab.plots.style import mpl_text

MISSING = "(unknown)"
#: Figure width (inches) facet_axes adds for the legend outside the panels on the right.
LEGEND_WIDTH = 1.6
#: Title characters per inch at the suptitle's font size (DejaVu Sans, conservative).
TITLE_CHARS_PER_INCH = 9.5


class MixedEstimatorError(FisherlabError, ValueError):
    """Frames hold tr(F) from several estimators and the caller asked not to facet."""


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise a ValueError naming the frame and the missing columns."""
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {missing}; the frame has {list(frame.columns)}"
        )


def as_list(columns: str | Sequence[str] | None) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str):
        return [columns]
    return list(columns)


def finite_rows(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Rows whose ``columns`` are finite numbers (inf and NaN are not drawn)."""
    out = frame.copy()
    keep = np.ones(len(out), dtype=bool)
    for c in columns:
        values = pd.to_numeric(out[c], errors="coerce").astype(float)
        out[c] = values
        keep &= np.isfinite(values.to_numpy())
    return out.loc[keep]


def label_columns(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Facet/hue columns as strings, missing values shown as ``(unknown)``."""
    out = frame.copy()
    for c in columns:
        col = out[c].astype(object)
        out[c] = [MISSING if _is_missing(v) else str(v) for v in col]
    return out


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def estimator_panels(
    frame: pd.DataFrame, panel: list[str], policy: str, what: str
) -> list[str]:
    """``panel`` plus ``estimator`` when the frame mixes estimators (policy ``facet``).

    With policy ``refuse`` a mix raises :class:`MixedEstimatorError`, whatever the panels.
    """
    if policy not in ("facet", "refuse"):
        raise ValueError(f"estimator_policy must be 'facet' or 'refuse', got {policy!r}")
    if "estimator" not in frame.columns:
        return panel
    found = sorted({str(v) for v in frame["estimator"] if not _is_missing(v)})
    if len(found) <= 1:
        return panel
    if policy == "refuse":
        raise MixedEstimatorError(
            f"{what}: the runs measured tr(F) with different estimators {found}; "
            "curves from different estimators are not comparable. Select runs of one "
            "estimator or facet by estimator (estimator_policy='facet')."
        )
    return panel if "estimator" in panel else [*panel, "estimator"]


def panel_keys(frame: pd.DataFrame, columns: list[str]) -> list[tuple[str, ...]]:
    """The sorted distinct combinations of ``columns`` (one per panel)."""
    if not columns:
        return [()]
    keys = frame[columns].drop_duplicates().itertuples(index=False, name=None)
    return sorted((tuple(str(v) for v in key) for key in keys), key=natural_key)


def natural_key(key: Iterable[Any]) -> tuple:
    """Sort numbers numerically (group 2 before group 10), other text alphabetically."""
    out = []
    for v in key:
        try:
            number = float(v)
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number):
            out.append((0, number, ""))
        else:
            out.append((1, 0.0, str(v)))
    return tuple(out)


def select_panel(frame: pd.DataFrame, columns: list[str], key: tuple[str, ...]) -> pd.DataFrame:
    if not columns:
        return frame
    mask = np.ones(len(frame), dtype=bool)
    for c, v in zip(columns, key, strict=True):
        mask &= (frame[c].astype(str) == v).to_numpy()
    return frame.loc[mask]


def panel_title(columns: list[str], key: tuple[str, ...]) -> str:
    parts = []
    for c, v in zip(columns, key, strict=True):
        parts.append(f"{c}: {v}" if c in ("estimator", "group") else v)
    return mpl_text(" · ".join(parts))


def facet_axes(
    n_panels: int,
    ax: Axes | None = None,
    col_wrap: int = 3,
    panel_size: tuple[float, float] = (3.4, 2.7),
    sharex: bool = False,
    sharey: bool = False,
    what: str = "figure",
) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``n_panels`` axes (or the given single ``ax``)."""
    if n_panels < 1:
        raise ValueError(f"{what}: nothing to draw (no panel has data)")
    if ax is not None:
        if n_panels != 1:
            raise ValueError(
                f"{what}: the data make {n_panels} panels but one ax was given; "
                "pass ax=None for a figure-level plot or filter the frame to one panel"
            )
        return ax.figure, [ax]
    ncols = max(1, min(col_wrap, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = PaperFigure(figsize=(panel_size[0] * ncols + LEGEND_WIDTH, panel_size[1] * nrows),
                      layout="constrained")
    grid = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    axes = [a for row in grid for a in row]
    for extra in axes[n_panels:]:
        extra.set_visible(False)
    return fig, axes[:n_panels]


def facet_grid(
    panel_cols: list[str],
    keys: list[tuple[str, ...]],
    *,
    ax: Axes | None = None,
    col_wrap: int = 3,
    panel_size: tuple[float, float] = (3.4, 2.7),
    what: str = "figure",
) -> tuple[Figure, str, list[tuple[Axes, tuple[str, ...], str]]]:
    """The figure, its shared title and ``(axis, key, panel title)`` for each panel key
    (:func:`facet_axes` + :func:`facet_titles`); pass the shared title to :func:`finish`."""
    fig, axes = facet_axes(len(keys), ax=ax, col_wrap=col_wrap, panel_size=panel_size, what=what)
    common, titles = facet_titles(panel_cols, keys, own_figure=ax is None)
    return fig, common, list(zip(axes, keys, titles, strict=True))


def facet_titles(columns: list[str], keys: list[tuple[str, ...]],
                 own_figure: bool = True) -> tuple[str, list[str]]:
    """Titles without repetition: values shared by every panel go to one figure title.

    Returns ``(common, per_panel)``; a panel whose values are all shared gets "".
    A single panel on a figure we created gets its title as the figure title: an
    axes title wider than its axes is clipped or runs into the outside legend.
    """
    if not keys:
        return "", []
    if len(keys) == 1 and own_figure:
        return panel_title(columns, keys[0]), [""]
    shared = [i for i in range(len(columns)) if len({k[i] for k in keys}) == 1]
    varying = [i for i in range(len(columns)) if i not in shared]
    common_cols = [columns[i] for i in shared]
    common = panel_title(common_cols, tuple(keys[0][i] for i in shared)) if len(keys) > 1 else ""
    if len(keys) == 1:
        return "", [panel_title(columns, keys[0])]
    titles = [panel_title([columns[i] for i in varying], tuple(k[i] for i in varying)) for k in keys]
    return common, titles


def add_legend(fig: Figure, ax: Axes | None, handles: list, labels: list[str], title: str) -> None:
    """Legend outside the panels on our figures; inside the caller's ``ax`` otherwise."""
    if ax is None:
        fig.legend(handles, labels, title=title, loc="outside right upper")
    else:
        ax.legend(handles, labels, title=title, loc="best", fontsize="small", title_fontsize="small")


def finish(fig: Figure, common: str, own_figure: bool) -> None:
    """Put the shared panel values in the figure title (only on figures we created).

    The title is centred over the panels, not the whole figure, and wrapped at its
    `` · `` separators to the panels' width, so it never runs into the legend
    (constrained layout places that at the top of the right margin).
    """
    if common and own_figure:
        width = fig.get_figwidth()
        panels = max(width - LEGEND_WIDTH, 1.0)
        fig.suptitle(wrap_title(common, int(panels * TITLE_CHARS_PER_INCH)), fontsize="medium",
                     x=0.5 * panels / width)


def wrap_title(title: str, max_chars: int, sep: str = " · ") -> str:
    """``title`` broken into lines at ``sep`` so that each line has at most ``max_chars``
    characters where possible (a single longer part keeps its own line)."""
    lines: list[str] = []
    for part in title.split(sep):
        if lines and len(lines[-1]) + len(sep) + len(part) <= max_chars:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return "\n".join(lines)
