"""Writing generated sweep files: the one writer behind the ``analyses/*/make_configs.py`` scripts.

A study's generator script builds ``{relative path: file text}`` (its ``configs()``, which
tests compare with the committed files) and calls :func:`write_sweep_files` to write them
under its own directory. Torch-free and side-effect free beyond the files it writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["run_generator", "write_sweep_files"]


def write_sweep_files(root: str | Path, files: Mapping[str, str]) -> int:
    """Write every ``files[rel]`` text to ``root / rel`` (parents created, existing files
    overwritten, so re-running a generator is idempotent); returns how many were written."""
    root = Path(root)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return len(files)


def run_generator(root: str | Path, files: Mapping[str, str]) -> None:
    """A generator script's ``main``: write ``files`` under ``root`` and say how many went where."""
    n = write_sweep_files(root, files)
    print(f"wrote {n} sweep files under {Path(root) / 'configs'}")
