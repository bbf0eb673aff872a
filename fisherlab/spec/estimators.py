"""The names of the tr(F) estimators (torch-free), so configs and strategy strings are checked
before anything is built; the estimators themselves are :mod:`fisherlab.fisher.estimators`."""

from __future__ import annotations

__all__ = ["ESTIMATORS", "LABEL_FREE_ESTIMATORS", "check_estimator"]

ESTIMATORS = ("per_example", "exact", "batch", "empirical", "reference")
#: The estimators that need no data labels (``empirical`` uses them): the ones a probe on
#: unlabelled target-language inputs can use.
LABEL_FREE_ESTIMATORS = tuple(name for name in ESTIMATORS if name != "empirical")


def check_estimator(name: object, where: str) -> str:
    """``name`` if it is an estimator; ``ValueError`` naming ``where`` and the known ones otherwise."""
    if name not in ESTIMATORS:
        raise ValueError(f"{where}: estimator {name!r} is unknown; expected one of {list(ESTIMATORS)}")
    return str(name)
