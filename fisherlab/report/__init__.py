"""``fisherlab analyze``: an HTML report, figures, CSV tables and a summary from a run store.

:func:`build_report` is the library entry point (the CLI calls it). Never imports
torch: only pandas, matplotlib/seaborn and ``fisherlab.runs``/``analysis``/``plots``.
"""

from __future__ import annotations

from fisherlab.report.build import build_report, safe_filename
from fisherlab.report.options import (
    FIGURES,
    ReportError,
    ReportOptions,
    ReportResult,
    parse_figures,
)

__all__ = [
    "FIGURES",
    "ReportError",
    "ReportOptions",
    "ReportResult",
    "build_report",
    "parse_figures",
    "safe_filename",
]
