"""The console of a local sweep (and so of ``fisherlab demo``): one bar, one line per run.

Without ``verbose`` the console shows one progress bar over the runs whose postfix follows
the running run (method, seed, step, last validation score), then one status line per
finished run; everything the run itself prints (the Trainer's log dicts, warnings, library
logging) goes to ``RUN_DIR/train.log``. With ``verbose`` the runs print as before (the old
stream) with a header line per run.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from fisherlab.sweep.plan import PlannedRun

__all__ = ["LOG_FILE", "SweepConsole"]

LOG_FILE = "train.log"
_NOT_SCORES = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_epoch", "eval_loss")


class _Progress:
    """What the console knows about the running run: last step and last validation score."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.score: tuple[str, float] | None = None

    def text(self, run: PlannedRun) -> str:
        parts = [f"method={run.method}", f"seed={run.seed}"]
        if self.step is not None:
            parts.append(f"step={self.step}")
        if self.score is not None:
            parts.append(f"validation {self.score[0]}={self.score[1]:.4g}")
        return " ".join(parts)


def _callback(progress: _Progress, refresh: Any) -> Any:
    """A TrainerCallback feeding ``progress`` (imported lazily: the console module stays light)."""
    from transformers import TrainerCallback

    class ConsoleStatus(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress.step = state.global_step
            refresh()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            scores = {k: v for k, v in (metrics or {}).items()
                      if k.startswith("eval_") and k not in _NOT_SCORES and isinstance(v, (int, float))}
            if not scores and isinstance((metrics or {}).get("eval_loss"), (int, float)):
                scores = {"eval_loss": metrics["eval_loss"]}
            if scores:
                key = sorted(scores)[0]
                progress.score = (key[len("eval_"):], float(scores[key]))
            refresh()

    return ConsoleStatus()


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Send stdout, stderr and every logging stream handler writing to the terminal into ``path``."""
    terminal = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    with open(path, "a", encoding="utf-8") as handle:
        swapped = []
        for logger in loggers:
            for handler in getattr(logger, "handlers", []):
                if type(handler) is logging.StreamHandler and id(handler.stream) in terminal:
                    swapped.append((handler, handler.setStream(handle)))
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield
        finally:
            for handler, stream in swapped:
                handler.setStream(stream)


class SweepConsole:
    """Console of one local sweep; use as a context manager around the loop over ``plan``."""

    def __init__(self, plan: Sequence[PlannedRun], enabled: bool = True, verbose: bool = False,
                 stream: TextIO | None = None) -> None:
        self.plan, self.enabled, self.verbose = list(plan), enabled, verbose
        self.stream = stream if stream is not None else sys.stderr
        self.bar: Any = None
        self.index = 0
        self._progress = _Progress()

    def __enter__(self) -> SweepConsole:
        if self.enabled and not self.verbose:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(self.plan), desc="runs", unit="run", file=self.stream, leave=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def _refresh(self, run: PlannedRun) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{run.name}: {self._progress.text(run)}")

    @contextlib.contextmanager
    def run(self, run: PlannedRun) -> Iterator[list[Any]]:
        """Around one run: yields the extra Trainer callbacks; output goes to ``train.log`` unless verbose
        (also when the console is off: quiet means nothing on the console, not a lost log)."""
        self.index += 1
        self._progress = _Progress()
        if self.verbose:
            if self.enabled:
                print(f"sweep [{self.index}/{len(self.plan)}] {run.name} ({run.strategy})", file=self.stream,
                      flush=True)
            yield []
            return
        run.run_dir.mkdir(parents=True, exist_ok=True)
        callbacks = []
        if self.enabled:
            self._refresh(run)
            callbacks = [_callback(self._progress, lambda: self._refresh(run))]
        with _log_to(run.run_dir / LOG_FILE):
            yield callbacks

    def finished(self, run: PlannedRun, record: dict[str, Any]) -> None:
        """One status line for a finished (trained, reused or failed) run."""
        if not self.enabled:
            return
        detail = f": {record['error']}" if record.get("error") else ""
        line = f"[{self.index}/{len(self.plan)}] {run.name} {record['status']} ({self._progress.text(run)}){detail}"
        if record["status"] == "trained" and not self.verbose:
            line += f"  log: {run.run_dir / LOG_FILE}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.update(1)
        else:
            print(f"sweep {line}", file=self.stream, flush=True)
