"""Loading a task's data from the Hugging Face hub by the dataset ids researchers know.

Every hub dataset a task reads is a :class:`HubSource` (repository id, revision,
how the config is named per language). Revisions are pinned per source in
``HUB_SOURCES`` and can be overridden per task (``revisions=`` option), so a run
records exactly what it read. ``facebook/mlqa``, ``cambridgeltl/xcopa`` and ``aps/super_glue`` (COPA) are
loading-script repositories, which ``datasets`` >= 4 refuses to run; they are read
from the hub's parquet conversion branch ``refs/convert/parquet`` (one folder per
config, ``<config>/<split>/0000.parquet``, selected with ``data_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fisherlab.tasks._data import TaskDataError


@dataclass(frozen=True)
class HubSource:
    """A dataset on the hub: ``repo`` at ``revision``; ``config``/``data_dir`` are format strings
    over ``{lang}`` (None: not used)."""

    repo: str
    revision: str
    config: str | None = None
    data_dir: str | None = None

    def describe(self, language: str | None = None) -> str:
        """``repo@revision (config or folder)`` for messages."""
        part = self.config or self.data_dir
        part = part.format(lang=language) if part and language else part
        where = f"{self.repo}@{self.revision}"
        return f"{where} ({part})" if part else where


# Named revisions: the branch each dataset is served from with `datasets` 5. Commit hashes could
# not be verified offline; pass `revisions=` to a task
# (``revisions={"xnli": "<commit>"}``, keys of HUB_SOURCES) to pin a commit.
HUB_SOURCES: dict[str, HubSource] = {
    "multi_nli": HubSource("nyu-mll/multi_nli", "main"),
    "xnli": HubSource("facebook/xnli", "main", config="{lang}"),
    "paws-x": HubSource("google-research-datasets/paws-x", "main", config="{lang}"),
    "squad": HubSource("rajpurkar/squad", "main", config="plain_text"),
    "xquad": HubSource("google/xquad", "main", config="xquad.{lang}"),
    "mlqa": HubSource("facebook/mlqa", "refs/convert/parquet", data_dir="mlqa.{lang}.{lang}"),
    "xcopa": HubSource("cambridgeltl/xcopa", "refs/convert/parquet", data_dir="{lang}"),
    "copa": HubSource("aps/super_glue", "refs/convert/parquet", data_dir="copa"),
}


def load_hub_split(key: str, split: str, language: str | None, task: str,
                   revisions: dict[str, str] | None = None) -> Any:
    """``datasets.load_dataset`` of one split of ``HUB_SOURCES[key]`` for ``language`` (a
    ``datasets.Dataset``), at ``revisions[key]`` when given, else the pinned revision."""
    import datasets

    source = HUB_SOURCES[key]
    kwargs: dict[str, Any] = {"revision": (revisions or {}).get(key, source.revision), "split": split}
    if source.config:
        kwargs["name"] = source.config.format(lang=language)
    if source.data_dir:
        kwargs["data_dir"] = source.data_dir.format(lang=language)
    try:
        return datasets.load_dataset(source.repo, **kwargs)
    except (ConnectionError, OSError, ValueError) as err:
        raise TaskDataError(f"{task}: could not load {source.describe(language)} split {split!r} from the hub "
                            f"({type(err).__name__}: {err}); offline, pass data_dir= with the release files") from err


def class_names(dataset: Any, column: str = "label") -> list[str] | None:
    """The ClassLabel names of ``column`` (None when it is not a ClassLabel)."""
    feature = dataset.features.get(column) if hasattr(dataset, "features") else None
    return list(feature.names) if getattr(feature, "names", None) else None
