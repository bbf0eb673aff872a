"""Several runs of a local sweep at once: one worker process per run, one writer of sweep.json.

``run_parallel`` (``fisherlab sweep --jobs N``) starts each planned run in its own Python
process (:mod:`fisherlab.sweep.worker`), at most ``N`` at a time. With GPUs, each run gets
one device through ``CUDA_VISIBLE_DEVICES`` (the process sees only that GPU, as ``cuda:0``)
and no device ever holds more than ``runs_per_gpu`` runs (default 1), so at most
``n_gpus * runs_per_gpu`` runs go at once whatever ``N`` says. Every run gets
``max(1, cores // concurrency)`` torch CPU threads (``torch.set_num_threads`` in the worker,
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in its environment); a config's own ``threads``
still wins. Only this (parent) process writes ``sweep.json`` (atomic replace after every
change), so the manifest is consistent whatever the workers do; a run that raises, or a
worker that dies without a result, is recorded ``failed`` with its error as in a serial
sweep. Each run's output goes to ``RUN_DIR/train.log`` (``verbose``: the console).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fisherlab.config import ConfigError
from fisherlab.sweep.console import LOG_FILE, SweepConsole, _Progress
from fisherlab.sweep.plan import PlannedRun
from fisherlab.sweep.run import is_completed

__all__ = ["DevicePool", "ParallelConsole", "cpu_cores", "detect_gpus", "run_parallel", "threads_per_run"]

_POLL_S = 0.2


def detect_gpus() -> list[str]:
    """Ids of the GPUs a local sweep may hand out (``CUDA_VISIBLE_DEVICES`` order), ``[]`` without.

    ``CUDA_VISIBLE_DEVICES`` set: its entries (up to an empty or ``-1`` entry, as CUDA reads
    it); else ``torch.cuda.device_count()`` devices ``"0".."n-1"`` (NVML: no CUDA context here).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for item in visible.split(","):
            item = item.strip()
            if not item or item == "-1":
                break
            ids.append(item)
        return ids
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA: a CPU sweep
        return []


def cpu_cores() -> int:
    """CPU cores this process may use (its affinity set where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_per_run(concurrency: int, cores: int | None = None) -> int:
    """Torch threads of each of ``concurrency`` simultaneous runs: ``max(1, cores // concurrency)``."""
    return max(1, (cpu_cores() if cores is None else cores) // max(1, concurrency))


class DevicePool:
    """Hands out GPU ids so that no device holds more than ``runs_per_gpu`` runs at once.

    Without GPUs (``gpus == []``) every ``acquire`` returns None (a CPU run) and the pool
    never limits concurrency.
    """

    def __init__(self, gpus: Sequence[str], runs_per_gpu: int = 1) -> None:
        if runs_per_gpu < 1:
            raise ConfigError(f"runs_per_gpu: {runs_per_gpu}; expected an integer >= 1")
        if len(set(gpus)) != len(gpus):
            raise ConfigError(f"gpus: {list(gpus)} names a device twice")
        self.gpus, self.runs_per_gpu = list(gpus), runs_per_gpu
        self.load = {gpu: 0 for gpu in self.gpus}

    @property
    def slots(self) -> int | None:
        """Runs the devices can hold at once (None: no GPUs, no limit)."""
        return len(self.gpus) * self.runs_per_gpu if self.gpus else None

    def acquire(self) -> str | None:
        """The least loaded GPU with room (lowest id first), or None without GPUs."""
        if not self.gpus:
            return None
        gpu = min(self.gpus, key=lambda g: (self.load[g], self.gpus.index(g)))
        if self.load[gpu] >= self.runs_per_gpu:
            raise RuntimeError(f"every GPU already holds {self.runs_per_gpu} run(s)")  # the caller waits first
        self.load[gpu] += 1
        return gpu

    def release(self, gpu: str | None) -> None:
        if gpu is not None:
            self.load[gpu] -= 1


class ParallelConsole(SweepConsole):
    """The sweep console for runs that overlap: one bar over the runs, the running ones as postfix."""

    def __init__(self, plan: Sequence[PlannedRun], enabled: bool = True, verbose: bool = False) -> None:
        super().__init__(plan, enabled=enabled, verbose=verbose)
        self.running: dict[str, str | None] = {}

    def _show_running(self) -> None:
        if self.bar is not None:
            names = [name if gpu is None else f"{name}@gpu{gpu}" for name, gpu in self.running.items()]
            self.bar.set_postfix_str("running: " + (", ".join(names) or "-"))

    def started(self, run: PlannedRun, gpu: str | None) -> None:
        self.running[run.name] = gpu
        if self.enabled and self.verbose:
            where = "" if gpu is None else f" on GPU {gpu}"
            print(f"sweep started {run.name} ({run.strategy}){where}", file=self.stream, flush=True)
        self._show_running()

    def done(self, run: PlannedRun, record: dict[str, Any]) -> None:
        self.running.pop(run.name, None)
        self.index += 1
        self._progress = _Progress()
        self.finished(run, record)
        self._show_running()


def _worker_env(gpu: str | None, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    root = str(Path(__file__).resolve().parents[2])  # the directory holding the fisherlab package
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p != root]])
    return env


class _Job:
    """One running worker: its process, where its result lands, what it was given."""

    def __init__(self, index: int, run: PlannedRun, gpu: str | None, threads: int, tmp: Path,
                 verbose: bool) -> None:
        self.index, self.run, self.gpu, self.begin = index, run, gpu, time.perf_counter()
        task, self.result = tmp / f"task-{index}.pkl", tmp / f"result-{index}.json"
        task.write_bytes(pickle.dumps({"run": run, "threads": threads}))
        run.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = None if verbose else open(run.run_dir / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fisherlab.sweep.worker", str(task), str(self.result)],
                env=_worker_env(gpu, threads), stdin=subprocess.DEVNULL,
                stdout=self.log, stderr=subprocess.STDOUT if self.log is not None else None)
        except BaseException:
            if self.log is not None:
                self.log.close()
            raise

    def outcome(self) -> dict[str, Any]:
        """``{"status", "error", "device", "threads"}`` the worker reported (or the reason it did not)."""
        if self.log is not None:
            self.log.close()
        try:
            return json.loads(self.result.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            where = "" if self.log is None else f"; see {self.run.run_dir / LOG_FILE}"
            return {"status": "failed", "error": f"worker exited with code {self.process.returncode} "
                                                 f"without a result{where}"}

    def stop(self) -> None:
        """Terminate the worker (then kill it if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()


def run_parallel(plan: Sequence[PlannedRun], records: list[dict[str, Any]], save: Callable[[], None],
                 jobs: int, runs_per_gpu: int = 1, progress: bool = True, verbose: bool = False,
                 gpus: Sequence[str] | None = None) -> None:
    """Run ``plan`` with up to ``jobs`` worker processes; fills ``records`` and calls ``save`` after changes.

    ``gpus``: the device ids to hand out (default :func:`detect_gpus`). Records gain
    ``device`` (the GPU id or None) and ``threads`` as the worker saw them.
    """
    if jobs < 1:
        raise ConfigError(f"jobs: {jobs}; expected an integer >= 1")
    pool = DevicePool(detect_gpus() if gpus is None else gpus, runs_per_gpu)
    concurrency = min(jobs, len(plan), pool.slots or jobs)
    if pool.slots is not None and jobs > pool.slots and progress:
        print(f"sweep: --jobs {jobs} but {len(pool.gpus)} GPU(s) x {runs_per_gpu} run(s) each: "
              f"{pool.slots} run(s) at a time", file=sys.stderr, flush=True)
    threads = threads_per_run(concurrency)
    pending = deque(range(len(plan)))
    running: list[_Job] = []
    console = ParallelConsole(plan, enabled=progress, verbose=verbose)
    with console, tempfile.TemporaryDirectory(prefix="fisherlab-sweep-") as tmp:
        try:
            while pending or running:
                while pending and len(running) < concurrency:
                    index = pending.popleft()
                    run = plan[index]
                    if is_completed(run):  # no worker needed to reuse a finished run
                        records[index].update(status="reused", seconds=0.0)
                        save()
                        console.done(run, records[index])
                        continue
                    gpu = pool.acquire()
                    running.append(_Job(index, run, gpu, threads, Path(tmp), verbose))
                    records[index].update(status="running", device=gpu, threads=threads)
                    console.started(run, gpu)
                    save()
                finished = [job for job in running if job.process.poll() is not None]
                if not finished:
                    time.sleep(_POLL_S)
                    continue
                for job in finished:
                    running.remove(job)
                    pool.release(job.gpu)
                    outcome = job.outcome()
                    record = records[job.index]
                    record.update(status=outcome.get("status", "failed"), error=outcome.get("error"),
                                  seconds=round(time.perf_counter() - job.begin, 3))
                    for key in ("device", "threads"):
                        if key in outcome:
                            record[key] = outcome[key]
                    save()
                    console.done(job.run, record)
        except BaseException as err:  # interrupted: stop the workers, record it, then stop
            for job in running:
                job.stop()
                records[job.index].update(status="failed", error=f"{type(err).__name__}: {err}",
                                          seconds=round(time.perf_counter() - job.begin, 3))
            save()
            raise
