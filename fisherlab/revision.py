"""The code revision of the installed fisherlab: package version plus git commit when available.

Recorded in every run's ``env`` (``fisherlab.train.environment``) so a run store says
which code produced it. Torch-free; never fails (no git, no repository: ``commit`` None).
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

__all__ = ["code_revision"]


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def code_revision() -> dict[str, str | bool | None]:
    """``{"version", "commit", "dirty"}``: the package version, the git commit of the
    checkout it is imported from (None outside a git checkout) and whether tracked
    files differ from that commit (None when unknown)."""
    import fisherlab

    root = Path(fisherlab.__file__).resolve().parent.parent
    commit = _git(root, "rev-parse", "HEAD")
    # only the checkout that holds this package counts (not an enclosing unrelated repository)
    top = _git(root, "rev-parse", "--show-toplevel") if commit else None
    if commit and (top is None or Path(top).resolve() != root):
        commit = None
    dirty = None
    if commit:
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {"version": fisherlab.__version__, "commit": commit, "dirty": dirty}
