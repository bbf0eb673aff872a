"""Finding a shipped run store from wherever a notebook's kernel starts (torch-free).

Jupyter starts a notebook's kernel in the notebook's folder (``notebooks/``); a script or a
kernel started elsewhere runs in the repository root or below it. :func:`find_run_store`
resolves a store path given relative to the repository root (``artifacts/fun/runs``) from
either place by looking in the working directory and every folder above it, and lets an
environment variable (``FISHERLAB_RUNS``) point at another store instead.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RUNS_ENV", "find_run_store"]

RUNS_ENV = "FISHERLAB_RUNS"
"""The environment variable that names a run store to analyse instead of the shipped one."""


def find_run_store(relative: str | os.PathLike, *, start: str | os.PathLike | None = None,
                   env: str | None = RUNS_ENV, hint: str = "open this notebook from the fisherlab repository") -> Path:
    """The directory ``$env`` names, else ``relative`` in ``start`` or the first folder above it that has it.

    ``relative``: the store's path from the repository root (``artifacts/demo/runs``);
    ``start``: where to begin looking (default: the working directory); ``env``: the
    environment variable that overrides the lookup (None: no override). ``hint`` is the
    first remedy the error gives. Raises FileNotFoundError naming the variable when it
    names no directory, and naming ``relative``, ``start`` and the remedies when no folder
    has the store.
    """
    relative = Path(relative)
    if relative.is_absolute():
        raise ValueError(f"find_run_store: relative must be a path from the repository root, got {relative}")
    if env and os.environ.get(env):
        path = Path(os.environ[env]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{env}={path} is not a directory (it must name a run store)")
        return path
    begin = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (begin, *begin.parents):
        if (folder / relative).is_dir():
            return folder / relative
    remedy = f"{hint}, or set {env} to a run store" if env else hint
    raise FileNotFoundError(f"no {relative.as_posix()} in {begin} or any folder above it: {remedy}")
