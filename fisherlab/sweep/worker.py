"""One run of a parallel local sweep, in its own process (``python -m fisherlab.sweep.worker TASK RESULT``).

``TASK`` is a pickle ``{"run": PlannedRun, "threads": int}`` written by
:mod:`fisherlab.sweep.parallel`; the run is trained with
:func:`fisherlab.sweep.run.execute_planned` (reused, resumed or started, as in a serial
sweep) and ``RESULT`` receives ``{"status", "error", "device", "threads"}`` as JSON
(atomically). ``device`` is the ``CUDA_VISIBLE_DEVICES`` this process was given.
A run that raises is ``failed`` with the error (traceback on stderr, i.e. in train.log).
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from pathlib import Path

from fisherlab.runs.writer import atomic_write_json


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m fisherlab.sweep.worker TASK.pkl RESULT.json", file=sys.stderr)
        return 2
    task_path, result_path = Path(argv[0]), Path(argv[1])
    task = pickle.loads(task_path.read_bytes())
    import torch

    from fisherlab.sweep.run import execute_planned

    torch.set_num_threads(int(task["threads"]))
    result = {"status": "failed", "error": None, "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "threads": torch.get_num_threads()}
    try:
        result["status"] = execute_planned(task["run"])
    except Exception as err:  # recorded in sweep.json by the parent, as a serial sweep does
        traceback.print_exc()
        result["error"] = f"{type(err).__name__}: {err}"
    atomic_write_json(result_path, result, fsync=False)
    sys.stdout.flush()
    return 0 if result["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
