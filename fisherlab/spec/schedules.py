"""Permutation schedules: the FUN paper's sampler of unfreezing orders (torch-free).

``sample_permutation_schedules`` reproduces the FUN paper's random schedules (section
5.2, footnote 9): the top layer is always unfrozen first, the next one comes from
``{L-2, L-3}`` and the remaining layers follow in a uniformly random order; duplicates
and the plain top-down order (kept as the extra, 10th schedule in the paper) are rejected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["sample_permutation_schedules", "count_permutation_schedules", "top_down_order"]

_ENUMERATE_LIMIT = 200_000


def _check(n_layers: int, first: int | None, second_from: Iterable[int] | None) -> tuple[int, list[int]]:
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    top = n_layers - 1
    first = top if first is None else int(first)
    if not 0 <= first < n_layers:
        raise ValueError(f"first={first} is not a layer index in [0, {n_layers - 1}]")
    if second_from is None:
        second = [layer for layer in (n_layers - 2, n_layers - 3) if layer >= 0 and layer != first]
    else:
        second = sorted({int(layer) for layer in second_from})
        bad = [layer for layer in second if not 0 <= layer < n_layers or layer == first]
        if bad:
            raise ValueError(f"second_from has {bad}: must be layer indices in [0, {n_layers - 1}] "
                             f"other than first={first}")
    if n_layers > 1 and not second:
        raise ValueError("second_from is empty: no layer may follow the first one")
    return first, second


def count_permutation_schedules(n_layers: int, first: int | None = None,
                                second_from: Iterable[int] | None = None) -> int:
    """How many distinct schedules :func:`sample_permutation_schedules` can return."""
    first, second = _check(n_layers, first, second_from)
    if n_layers == 1:
        total = 1
    else:
        total = len(second) * math.factorial(n_layers - 2)
    top_down_allowed = first == n_layers - 1 and (n_layers == 1 or n_layers - 2 in second)
    return total - (1 if top_down_allowed else 0)


def sample_permutation_schedules(n_layers: int, n: int, seed: int, first: int | None = None,
                                 second_from: Iterable[int] | None = None) -> list[list[int]]:
    """``n`` distinct random unfreezing orders of ``n_layers`` layers (lists of layer indices).

    Each order starts with ``first`` (default: the top layer ``n_layers - 1``), then a layer
    drawn uniformly from ``second_from`` (default ``{L-2, L-3}``), then the remaining layers
    in a uniformly random order -- the distribution of the paper's rejection sampler
    (uniform permutations accepted when they start as required). The top-down order and
    duplicates are rejected. Deterministic for a given ``seed``. Raises ValueError when
    ``n`` exceeds :func:`count_permutation_schedules`.
    """
    first, second = _check(n_layers, first, second_from)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    available = count_permutation_schedules(n_layers, first, second)
    if n > available:
        raise ValueError(
            f"cannot sample {n} distinct schedules: only {available} exist for n_layers={n_layers}, "
            f"first={first}, second from {second} (top-down order excluded)")
    rng = np.random.default_rng(seed)
    top_down = tuple(range(n_layers - 1, -1, -1))
    if available <= _ENUMERATE_LIMIT and n > available // 2:
        # Near-exhaustive requests: enumerate and draw without replacement (no endless rejection).
        from itertools import permutations

        pool = [(first, s, *rest) for s in second
                for rest in permutations([x for x in range(n_layers) if x not in (first, s)])]
        pool = [order for order in pool if order != top_down] if n_layers > 1 else [(first,)]
        picks = rng.choice(len(pool), size=n, replace=False)
        return [list(map(int, pool[i])) for i in picks]
    chosen: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    while len(chosen) < n:
        s = int(second[rng.integers(len(second))])
        rest = [x for x in range(n_layers) if x not in (first, s)]
        order = (first, s, *(int(x) for x in rng.permutation(rest)))
        if order == top_down or order in seen:
            continue
        seen.add(order)
        chosen.append(list(order))
    return chosen


def top_down_order(n_layers: int) -> list[int]:
    """The plain top-down unfreezing order ``[L-1, ..., 0]`` (gradual unfreezing's; the paper's 10th schedule)."""
    _check(n_layers, None, None)
    return list(range(n_layers - 1, -1, -1))
