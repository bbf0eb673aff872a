"""The run store: the contract between training and analysis (``docs/run-format.md``).

``RunWriter`` writes one run directory on the training side; ``read_run``/``read_runs``
read them back on the analysis side. Never imports torch.
"""

from __future__ import annotations

from fisherlab.runs.labels import (
    LABEL_FIELDS,
    LABELS_VERSION,
    labels_of,
    legacy_labels,
    validate_labels,
)
from fisherlab.runs.reader import (
    Run,
    StoreTables,
    find_run_dirs,
    read_run,
    read_run_info,
    read_runs,
)
from fisherlab.runs.schema import FORMAT_VERSION, RunExistsError, RunFormatError, peek_run_json
from fisherlab.runs.writer import RunWriter, atomic_write_json

__all__ = [
    "FORMAT_VERSION",
    "LABELS_VERSION",
    "LABEL_FIELDS",
    "Run",
    "RunExistsError",
    "RunFormatError",
    "RunWriter",
    "StoreTables",
    "atomic_write_json",
    "find_run_dirs",
    "labels_of",
    "legacy_labels",
    "peek_run_json",
    "read_run",
    "read_run_info",
    "read_runs",
    "validate_labels",
]
