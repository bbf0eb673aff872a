"""Where real task data lives: an explicit ``data_dir`` or ``$FISHERLAB_DATA``."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_dir(data_dir: str | Path | None, task: str, subdir: str) -> Path:
    """``data_dir`` (or ``$FISHERLAB_DATA``), descending into ``subdir`` when it is there."""
    if data_dir is None:
        env = os.environ.get("FISHERLAB_DATA")
        if not env:
            raise ValueError(f"{task}: data_dir not given and $FISHERLAB_DATA is not set")
        data_dir = env
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ValueError(f"{task}: data_dir {root} is not a directory")
    return root / subdir if (root / subdir).is_dir() else root
