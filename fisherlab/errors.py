"""The one exception base of fisherlab (torch-free, importable from anywhere).

Every error fisherlab raises on bad input derives from :class:`FisherlabError`, so a
caller (a sweep, a notebook, the CLI) can catch "fisherlab said no" in one clause and
tell it apart from a bug. Each subclass also derives from the builtin it used to be
(``ValueError`` unless said otherwise), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class FisherlabError(Exception):
    """Base class of every error fisherlab raises on bad input or bad state."""
