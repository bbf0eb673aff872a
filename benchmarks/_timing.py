"""Timing and memory helpers shared by the benchmark scripts (not part of the package).

* :func:`time_methods` -- seconds per call of several zero-argument callables, every
  repetition running each once in a freshly shuffled order (so load drifts on a shared
  machine hit all methods alike), after one warm-up call each.
* :func:`median_ratio` -- the median over repetitions of ``time(a) / time(b)``, the ratio
  taken *within* each repetition.
* :func:`peak_memory` -- peak bytes torch allocated on the CPU during one call, above the
  level at its start (torch.profiler ``profile_memory``; tracemalloc does not see torch).
* :func:`profile_ops` -- where the extra time of a method over a baseline goes (cProfile on
  process CPU time, per Python function).
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


def profile_ops(methods: dict[str, Callable[[], object]], names: list[str], top: int = 12) -> dict:
    """Per function self CPU seconds (cProfile with the process-time clock, so a loaded machine
    does not inflate them) of one call of each of ``names`` and of ``fwd+bwd``; the functions
    whose time differs most from the baseline's: where the extra time goes. Native work
    shows under the Python function that started it (``torch.autograd.grad``, ``linear``, ...)."""
    import cProfile
    import pstats
    import time as _time

    def funcs(fn) -> dict[str, float]:
        prof = cProfile.Profile(_time.process_time)
        prof.runcall(fn)
        stats = pstats.Stats(prof).stats
        out: dict[str, float] = {}
        for (path, line, func), (_, _, tottime, _, _) in stats.items():
            key = f"{func} ({os.path.basename(path)}:{line})" if line else func
            out[key] = out.get(key, 0.0) + tottime
        return out

    base = funcs(methods["fwd+bwd"])
    out = {}
    for name in names:
        mine = funcs(methods[name])
        diff = {k: mine.get(k, 0.0) - base.get(k, 0.0) for k in set(mine) | set(base)}
        worst = sorted(diff, key=lambda k: -abs(diff[k]))[:top]
        out[name] = {"total_s": sum(mine.values()), "base_total_s": sum(base.values()),
                     "top": [(k, round(base.get(k, 0.0), 4), round(mine.get(k, 0.0), 4)) for k in worst]}
    return out
