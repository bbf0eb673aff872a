"""Shared set-up of the own-script tests: the tiny testbed where the examples look for it."""

from __future__ import annotations

import os
from pathlib import Path


def link_tiny_testbed(testbed, cache: Path) -> None:
    """Make ``$FISHERLAB_CACHE`` (``cache``) hold ``testbed`` under its hash, as ``build_testbed`` caches it,
    so ``world: tiny`` configs and ``--tiny`` scripts reuse the session's tiny testbed."""
    from fisherlab.testbed.world import tiny_world_config

    target = cache / "testbed" / tiny_world_config(seed=0).digest()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(Path(testbed.root).resolve(), target_is_directory=True)
    os.environ["FISHERLAB_CACHE"] = str(cache)
