"""What the parts of a training run are, recorded in ``run.json`` by the parts themselves (torch-free).

A bare script writes ``RunWriter.create(run_dir, config={})`` and knows no method; the
callbacks that train the run do. :func:`record_component` is how they say it:

* ``run.json["config"]["callbacks"][<key>]`` = the component's settings (the unfreezing
  strategy string and its blocks, the probe's ``every``/``n_batches``/``estimator``/...);
* labels the writer did not know are filled in (``fisherlab.runs.labels``): ``strategy``
  when null, ``estimator`` when null, and the ``method`` of an ``(unlabelled)`` run becomes
  the strategy's name (``+regulariser`` labels as ``method_label`` does);
* the probe's settings become ``run.json["fisher"]`` when that is empty.

Labels a writer was given (``fisherlab train`` passes all of them) are never changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fisherlab.runs.labels import UNLABELLED, validate_labels

__all__ = ["record_component"]


def record_component(writer: Any, key: str, settings: Mapping[str, Any], *, strategy: str | None = None,
                     estimator: str | None = None, fisher: bool = False) -> None:
    """Record component ``key`` (its ``settings``) in ``writer``'s ``run.json`` (see module docstring).

    ``strategy``: its canonical strategy string; ``estimator``: the tr(F) estimator it uses;
    ``fisher``: the settings describe the tr(F) probe (``run.json["fisher"]``)."""
    info = getattr(writer, "info", None)
    if not isinstance(info, Mapping) or not hasattr(writer, "update_info"):
        return  # not a RunWriter (e.g. a user's own logger): nothing to record
    config = dict(info.get("config") or {})
    callbacks = dict(config.get("callbacks") or {})
    callbacks[str(key)] = dict(settings)
    config["callbacks"] = callbacks
    labels = dict(info.get("labels") or {})
    if strategy is not None and labels.get("strategy") is None:
        labels["strategy"] = str(strategy)
    if labels.get("method") == UNLABELLED and labels.get("strategy"):
        name = str(labels["strategy"]).split(":", 1)[0].strip()
        regulariser = labels.get("regulariser")
        labels["method"] = name if regulariser in (None, "none") else f"{name}+{regulariser}"
    if estimator is not None and labels.get("estimator") is None:
        labels["estimator"] = str(estimator)
    fields: dict[str, Any] = {"config": config}
    if labels:
        fields["labels"] = validate_labels(labels, f"{getattr(writer, 'path', 'run')}: labels")
    if fisher and not info.get("fisher"):
        fields["fisher"] = dict(settings)
    writer.update_info(**fields)
