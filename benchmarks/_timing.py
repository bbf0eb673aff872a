"""Timing and memory helpers shared by the benchmark scripts (not part of the package).

* :func:`time_methods` -- seconds per call of several zero-argument callables, every
  repetition running each once in a freshly shuffled order (so load drifts on a shared
  machine hit all methods alike), after one warm-up call each.
* :func:`median_ratio` -- the median over repetitions of ``time(a) / time(b)``, the ratio
  taken *within* each repetition.
* :func:`peak_memory` -- peak bytes torch allocated on the CPU during one call, above the
  level at its start (torch.profiler ``profile_memory``; tracemalloc does not see torch).
* :func:`clock` -- ``perf_counter`` ("wall") or ``process_time`` ("cpu": this process's
  CPU time, steadier on a loaded machine; use it with one torch thread, since busy-waiting
  threads count too).

Scripts in ``benchmarks/`` run as ``python benchmarks/NAME.py`` and import this module as
``from _timing import ...`` (``benchmarks/`` is the script's directory on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence


def clock(kind: str) -> Callable[[], float]:
    """``"wall"`` -> ``time.perf_counter``; ``"cpu"`` -> ``time.process_time``."""
    if kind not in ("wall", "cpu"):
        raise ValueError(f"clock: expected 'wall' or 'cpu', got {kind!r}")
    return time.process_time if kind == "cpu" else time.perf_counter


def time_methods(methods: Mapping[str, Callable[[], object]], reps: int, seed: int,
                 clock: Callable[[], float] = time.perf_counter, warmup: bool = True,
                 sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call, each repetition running every method once in a shuffled order.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before starting and before
    stopping each clock, so asynchronous devices are timed to completion."""
    order = list(methods)
    rng = random.Random(seed)
    if warmup:
        for fn in methods.values():  # lazy init, allocator
            fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(reps):
        rng.shuffle(order)
        for name in order:
            if sync is not None:
                sync()
            start = clock()
            methods[name]()
            if sync is not None:
                sync()
            times[name].append(clock() - start)
    return times


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over repetitions of the per-repetition ratio ``numerator[i] / denominator[i]``."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def ratio_spread(numerator: Sequence[float], denominator: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of the per-repetition ratios."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by torch on CPU during ``fn()`` above the level at its start."""
    from torch.profiler import ProfilerActivity, profile

    # Kineto prints start/stop lines on stderr: silence fd 2 while profiling.
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as fh:
            events = json.load(fh)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max([0, *totals])


def cuda_peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by torch on the current CUDA device during ``fn()``, above its start."""
    import torch

    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - start
