"""Paper style, the method colour map and reproducible saving for every figure.

Nothing here touches matplotlib's global state on import: the style is applied
with :func:`paper_style` (a ``matplotlib.rc_context``) around drawing *and*
saving, because settings such as ``pdf.fonttype`` are read at save time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import matplotlib as mpl
import seaborn as sns
from matplotlib.figure import Figure

#: The colour-blind-safe palette every figure draws method colours from
#: (seaborn "colorblind", i.e. Okabe-Ito-like hues); the order is fixed.
PALETTE_NAME = "colorblind"
PALETTE: tuple[tuple[float, float, float], ...] = tuple(
    tuple(float(c) for c in rgb) for rgb in sns.color_palette(PALETTE_NAME, 10)
)

#: Preferred palette slots for the methods of the two papers, so that e.g.
#: "fisher" (FUN) has the same colour in every figure and every report.
#: Synonyms share a slot; when two different methods of one study prefer the
#: same slot, the one sorted later takes the next free slot.
KNOWN_METHODS: dict[str, int] = {
    "standard": 0,
    "gradual": 1,
    "gu": 1,
    "fisher": 2,
    "fun": 2,
    "penalty": 3,
    "fisher_penalty": 3,
    "fpen": 3,
    "lpft": 4,
    "permutation": 5,
    "reverse": 6,
    "random": 7,
    "rand": 7,
    "full": 8,
    "full_finetuning": 8,
    "surgical": 9,
    "consistency": 9,
    "kl": 9,
    "l2": 5,
    "none": 0,
}

#: Neutral colours for quantities that are not methods (Figure 4's twin axes).
TRACE_COLOR = (0.15, 0.15, 0.15)
VALIDATION_COLOR = PALETTE[3]

#: Dots per inch of every PNG (fixed so PNGs are reproducible too).
PNG_DPI = 200

#: PDF metadata without a creation date, so the same figure gives the same bytes.
PDF_METADATA: dict[str, Any] = {"CreationDate": None, "Creator": "fisherlab", "Producer": None}


def _rc() -> dict[str, Any]:
    rc: dict[str, Any] = {}
    rc.update(sns.axes_style("ticks"))
    rc.update(sns.plotting_context("paper", font_scale=1.1))
    rc.update(
        {
            "pdf.fonttype": 42,  # embed TrueType (Type 42), never Type 3
            "ps.fonttype": 42,
            "svg.fonttype": "path",
            "svg.hashsalt": "fisherlab",
            "font.family": "sans-serif",
            "font.sans-serif": ["DejaVu Sans"],
            "mathtext.fontset": "dejavusans",
            "figure.dpi": 100,
            "savefig.dpi": PNG_DPI,
            "savefig.bbox": None,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "image.interpolation": "none",
            # No "1e-11+3.75e1" offset text: constant or narrow data keep readable tick labels.
            "axes.formatter.useoffset": False,
            # Scientific multiplier (×1e-4) outside [1e-3, 1e4]: tr(F) ticks like 0.00075 overlap.
            "axes.formatter.limits": (-3, 4),
        }
    )
    return rc


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply the paper style (Type 42 fonts, fixed dpi, seaborn "ticks") temporarily."""
    with mpl.rc_context(_rc()):
        yield


def _slot_key(method: str) -> str:
    return str(method).strip().lower().replace("-", "_").replace(" ", "_")


def method_colors(methods: Iterable[Any]) -> dict[str, tuple[float, float, float]]:
    """A stable method -> colour mapping.

    Known methods (``standard``, ``gradual``, ``fisher``, ``lpft``, ``random``, ...)
    always get the same colour; other names get the free palette slots in sorted
    order. Compute it once over *all* methods of a study and pass it as
    ``palette=`` to every figure so colours agree across figures.
    """
    names = sorted({str(m) for m in methods if m is not None and str(m) != "nan"})
    out: dict[str, tuple[float, float, float]] = {}
    used: set[int] = set()
    slot_of: dict[int, str] = {}
    for name in names:  # known names first, in sorted order
        slot = KNOWN_METHODS.get(_slot_key(name))
        if slot is None:
            continue
        owner = slot_of.get(slot)
        if owner is not None and not _synonyms(owner, name):
            free_slots = [i for i in range(len(PALETTE)) if i not in used]
            if not free_slots:
                out[name] = PALETTE[slot]
                continue
            slot = free_slots[0]
        out[name] = PALETTE[slot]
        used.add(slot)
        slot_of.setdefault(slot, name)
    free = [i for i in range(len(PALETTE)) if i not in used]
    unknown = [n for n in names if n not in out]
    for i, name in enumerate(unknown):
        if i < len(free):
            out[name] = PALETTE[free[i]]
        else:  # more methods than distinguishable colours: reuse, in order
            out[name] = PALETTE[i % len(PALETTE)]
    return out


_SYNONYMS = ({"gradual", "gu"}, {"fisher", "fun"}, {"random", "rand"},
             {"penalty", "fisher_penalty", "fpen"}, {"full", "full_finetuning"},
             {"consistency", "kl"})


def _synonyms(a: str, b: str) -> bool:
    ka, kb = _slot_key(a), _slot_key(b)
    return ka == kb or any(ka in group and kb in group for group in _SYNONYMS)


def method_color(method: str) -> tuple[float, float, float]:
    """The colour of one method on its own (same as in :func:`method_colors` for known names)."""
    return method_colors([method])[str(method)]


def resolve_palette(
    values: Iterable[Any], palette: Mapping[str, Any] | None
) -> dict[str, tuple[float, float, float]]:
    """``palette`` completed with stable colours for any value it lacks."""
    values = [str(v) for v in values]
    base = method_colors(values)
    if palette is None:
        return base
    out = {str(k): tuple(mpl.colors.to_rgb(v)) for k, v in palette.items()}
    for v in values:
        out.setdefault(v, base[v])
    return out


def mpl_text(text: Any) -> str:
    """User text made safe for matplotlib (``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def save_figure(
    fig: Figure, path_stem: str | Path, formats: Iterable[str] = ("pdf", "png")
) -> list[Path]:
    """Write ``fig`` as ``<path_stem>.pdf`` (vector, Type 42 fonts) and ``.png``.

    Byte-reproducible: no creation date, fixed dpi, fixed SVG hash salt.
    Returns the paths written, in the order of ``formats``.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with paper_style():
        for fmt in formats:
            fmt = fmt.lower().lstrip(".")
            path = stem.with_name(stem.name + "." + fmt)
            if fmt == "pdf":
                fig.savefig(path, format="pdf", metadata=PDF_METADATA)
            elif fmt == "png":
                fig.savefig(path, format="png", dpi=PNG_DPI, metadata={"Software": None})
            elif fmt == "svg":
                fig.savefig(path, format="svg", metadata={"Date": None, "Creator": "fisherlab"})
            else:
                raise ValueError(f"save_figure: unsupported format {fmt!r}; use pdf, png or svg")
            written.append(path)
    return written
