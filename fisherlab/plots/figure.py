"""The Figure every fisherlab plot draws on: a matplotlib Figure that shows itself in Jupyter.

fisherlab's plots build their figures with ``Figure(...)``, not ``pyplot``, so that
they never touch global state and work under any backend. The price: Jupyter's
inline backend registers its image formatter only once ``pyplot`` is imported, and
under ``MPLBACKEND=Agg`` (CI, scripts, some kernels) never, so a plain ``Figure``
displayed as a cell result printed ``<Figure size 500x270 with 1 Axes>``.

:class:`PaperFigure` adds ``_repr_png_``, which IPython and every Jupyter front end
call for a cell's result or ``display(fig)``, whatever the backend. It changes
nothing else: ``savefig``/:func:`fisherlab.plots.save_figure` write the same bytes as
for a plain ``Figure``. There is no double display: the object is shown once as the
cell's result (the inline backend only auto-shows figures that ``pyplot`` manages,
and where it has registered its own formatter for ``Figure`` that one is used instead).
"""

from __future__ import annotations

import io
import struct

from matplotlib.figure import Figure

from fisherlab.plots.style import paper_style

#: Pixels per inch of the PNG shown in a notebook (1.5x the 100-dpi logical size,
#: so the image is sharp on high-density screens).
DISPLAY_DPI = 150
#: The logical dots per inch the notebook displays the image at.
DISPLAY_LOGICAL_DPI = 100


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image (no IHDR chunk after the signature)")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


class PaperFigure(Figure):
    """A :class:`matplotlib.figure.Figure` with a PNG rich display for IPython/Jupyter."""

    def _repr_png_(self) -> tuple[bytes, dict[str, int]]:
        """PNG bytes (paper style, tight bounding box) and the logical display size.

        IPython's display protocol: returns ``(data, {"width": w, "height": h})``; the
        image is rendered at :data:`DISPLAY_DPI` and shown at :data:`DISPLAY_LOGICAL_DPI`.
        """
        buffer = io.BytesIO()
        with paper_style():
            self.savefig(buffer, format="png", dpi=DISPLAY_DPI, bbox_inches="tight",
                         metadata={"Software": None})
        data = buffer.getvalue()
        width, height = png_size(data)
        scale = DISPLAY_LOGICAL_DPI / DISPLAY_DPI
        return data, {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}
