"""Unfreezing order against the top-down diagonal of gradual unfreezing (FUN Fig. 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fisherlab.plots import _bands as bands
from fisherlab.plots import _facets as facets
from fisherlab.plots.style import mpl_text, paper_style, resolve_palette

MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "*")


def plot_unfreezing_order(
    positions: pd.DataFrame,
    *,
    hue: str = "method",
    panel: str | Sequence[str] | None = ("model", "task"),
    n_layers: int | None = None,
    palette: Mapping[str, Any] | None = None,
    dodge: float = 0.12,
    min_error_n: int = bands.MIN_BAND_N,
    col_wrap: int = 3,
    ax: Axes | None = None,
) -> Figure:
    """Mean position at which each layer was unfrozen, per method, with the top-down diagonal.

    ``positions`` is ``mean_unfreeze_position`` output (``method, layer,
    mean_position, std, n``), optionally with panel columns. x: layer index,
    y: mean 0-based unfreezing position (error bar ±1 sd over runs, drawn where a
    method has at least ``min_error_n`` runs; the legend gives each method's n); the
    dashed diagonal is gradual unfreezing's top-down order (layer L-1 first).
    Rows without a layer (the head) are not drawn. ``n_layers`` defaults to the
    largest layer index + 1 in each panel.
    """
    what = "plot_unfreezing_order"
    facets.require_columns(positions, [hue, "layer", "mean_position"], what)
    panel_cols = [c for c in facets.as_list(panel) if c in positions.columns]
    data = facets.finite_rows(positions, ["layer", "mean_position"])
    if "std" in data.columns:
        data["std"] = pd.to_numeric(data["std"], errors="coerce").astype(float)
    data = facets.label_columns(data, [hue, *panel_cols])
    keys = facets.panel_keys(data, panel_cols) if len(data) else []
    hues = sorted(data[hue].unique())
    colors = resolve_palette(hues, palette)
    offsets = {h: (i - (len(hues) - 1) / 2) * dodge for i, h in enumerate(hues)}
    has_n = "n" in data.columns
    if has_n:
        data["n"] = pd.to_numeric(data["n"], errors="coerce")

    with paper_style():
        fig, common, panels = facets.facet_grid(panel_cols, keys, ax=ax, col_wrap=col_wrap, panel_size=(3.2, 3.0), what=what)
        for axis, key, title in panels:
            part = facets.select_panel(data, panel_cols, key)
            top = int(n_layers) if n_layers is not None else int(part["layer"].max()) + 1
            layers = np.arange(top)
            axis.plot(layers, top - 1 - layers, ls="--", color="0.5", lw=1, zorder=1)
            for i, h in enumerate(hues):
                rows = part.loc[part[hue] == h].sort_values("layer")
                if not len(rows):
                    continue
                err = rows["std"].fillna(0.0).to_numpy() if "std" in rows.columns else None
                if err is not None and has_n and not (rows["n"] >= min_error_n).all():
                    err = None
                axis.errorbar(
                    rows["layer"].to_numpy() + offsets[h], rows["mean_position"].to_numpy(),
                    yerr=err, color=colors[h], marker=MARKERS[i % len(MARKERS)], ms=4,
                    lw=1, capsize=2, zorder=2,
                )
            axis.set_xlabel("layer")
            axis.set_ylabel("unfreezing position (0 = first)")
            step = max(1, top // 6)
            axis.set_xticks(layers[::step])
            axis.set_yticks(layers[::step])
            axis.set_xlim(-0.6, top - 0.4)
            axis.set_ylim(-0.6, top - 0.4)
            axis.set_title(title)
        handles = [Line2D([], [], ls="--", color="0.5")]
        labels = ["top-down (gradual)"]
        for i, h in enumerate(hues):
            handles.append(Line2D([], [], color=colors[h], marker=MARKERS[i % len(MARKERS)], lw=1))
            runs = f" ({bands.n_text(data.loc[data[hue] == h, 'n'])})" if has_n else ""
            labels.append(mpl_text(h + runs))
        title = "mean ±1 sd over runs" + (f"\n(error bars where n ≥ {min_error_n})" if has_n else "")
        facets.add_legend(fig, ax, handles, labels, title)
        facets.finish(fig, common, ax is None)
    return fig
