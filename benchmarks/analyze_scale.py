"""Scale benchmark of the analysis side: 1,000 runs x 100 probe steps x 12 blocks.

Generates a synthetic run store (``fisherlab.analysis.synthetic``; cached under
``--root``), then, each in a fresh interpreter so that peak memory is the analysis's own:

* baseline: ``json.loads`` of every JSONL line of every run (no validation, no frames);
* analysis: ``load_runs`` + ``trace_curves`` + ``curve_features`` + ``correlation_grid``
  + ``compare_methods`` + ``result_table`` + the schedule summaries + ``group_runs``.

Prints wall time, CPU time and peak RSS of each (medians over ``--repeat`` alternating repetitions)
and their ratio. Then ``load_runs`` alone, cold (``cache=False``: every file parsed) against
warm (the load cache written by a first load), alternating, medians and the ratio printed.
The requirements on the 2-core development machine: <= 20 s and <= 2 GB for the analysis,
<= 2 s for a warm re-read of the 1,000 runs. Usage:
``python benchmarks/analyze_scale.py [--runs 1000] [--repeat 3] [--load-only]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_BASELINE = r"""
import json, os, resource, sys, time
root = sys.argv[1]
t0 = time.perf_counter()
n = 0
for dirpath, _, files in os.walk(root):
    for name in files:
        if name.endswith(".jsonl"):
            with open(os.path.join(dirpath, name), encoding="utf-8") as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
            n += len(rows)
elapsed = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": elapsed, "peak_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "lines": n}))
"""

CHILD_ANALYSIS = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import fisherlab.analysis as A
t_import = time.perf_counter() - t0
root = sys.argv[1]
timings = {}
t = time.perf_counter(); rs = A.load_runs(root, cache=False); timings["load_runs"] = time.perf_counter() - t
t = time.perf_counter(); curves = A.trace_curves(rs, window=5, scale01=True); timings["trace_curves"] = time.perf_counter() - t
t = time.perf_counter(); feats = A.curve_features(curves); timings["curve_features"] = time.perf_counter() - t
t = time.perf_counter()
grid = A.correlation_grid(feats, rs, ys=("xling_avg", "source_score"))  # defaults: 2000 draws each
timings["correlation_grid"] = time.perf_counter() - t
t = time.perf_counter(); cmp = A.compare_methods(rs, baseline="standard"); timings["compare_methods"] = time.perf_counter() - t
t = time.perf_counter(); table = A.result_table(rs, baseline="standard"); timings["result_table"] = time.perf_counter() - t
t = time.perf_counter()
orders = A.unfreezing_orders(rs); A.mean_unfreeze_position(orders); A.order_agreement(orders)
timings["schedules"] = time.perf_counter() - t
t = time.perf_counter()
A.group_runs(rs.runs[["run_id", "model", "task", "xling_avg"]].rename(columns={"xling_avg": "value"}), by=("model", "task"))
timings["group_runs"] = time.perf_counter() - t
elapsed = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": elapsed, "import_s": t_import, "peak_mb": usage.ru_maxrss / 1024,
                  "cpu_s": usage.ru_utime + usage.ru_stime,
                  "fisher_rows": len(rs.fisher), "runs": len(rs.runs), "problems": len(rs.problems),
                  "timings": timings}))
"""


CHILD_LOAD = r"""
import json, resource, sys, time
import fisherlab.analysis as A
root, cache = sys.argv[1], sys.argv[2] == "on"
t, c = time.perf_counter(), time.process_time()
rs = A.load_runs(root, cache=cache)
print(json.dumps({"seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c,
                  "runs": len(rs.runs), "fisher_rows": len(rs.fisher)}))
"""


def _child(code: str, root: Path, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(root), *extra], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=12, help="layer blocks per run (no head)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--load-only", action="store_true", help="only load_runs cold vs warm")
    parser.add_argument("--root", type=Path, default=None, help="store location (default: a temp dir)")
    args = parser.parse_args()

    root = args.root or Path(tempfile.gettempdir()) / f"fisherlab-scale-{args.runs}x{args.steps}x{args.blocks}"
    marker = root / ".complete"
    if not marker.exists():
        from fisherlab.analysis.synthetic import write_synthetic_store

        t = time.perf_counter()
        write_synthetic_store(root, n_runs=args.runs, n_steps=args.steps, n_blocks=args.blocks, head=False,
                              methods=("standard", "gradual", "fisher", "permutation", "random"),
                              seeds=tuple(range(10)), models=("m-a", "m-b"), tasks=("t-a", "t-b"))
        marker.touch()
        print(f"generated {args.runs} runs in {time.perf_counter() - t:.1f} s under {root}")
    if not args.load_only:
        _analysis(root, args.repeat)
    _load(root, args.repeat)


def _analysis(root: Path, repeat: int) -> None:
    base, full = [], []
    for _ in range(repeat):  # alternate so machine load hits both alike
        base.append(_child(CHILD_BASELINE, root))
        full.append(_child(CHILD_ANALYSIS, root))
    b_s = statistics.median(r["seconds"] for r in base)
    f_s = statistics.median(r["seconds"] for r in full)
    b_cpu = statistics.median(r["cpu_s"] for r in base)
    f_cpu = statistics.median(r["cpu_s"] for r in full)
    b_mb = statistics.median(r["peak_mb"] for r in base)
    f_mb = statistics.median(r["peak_mb"] for r in full)
    last = full[-1]
    print(f"store: {last['runs']} runs, {last['fisher_rows']} fisher rows, {last['problems']} problems")
    print(f"baseline (json.loads per line, {base[-1]['lines']} lines): {b_s:.2f} s wall, "
          f"{b_cpu:.2f} s CPU, peak RSS {b_mb:.0f} MB")
    print(f"load + analyse (incl. import {last['import_s']:.2f} s): {f_s:.2f} s wall, {f_cpu:.2f} s CPU, "
          f"peak RSS {f_mb:.0f} MB")
    print(f"ratio analysis / baseline: wall {f_s / b_s:.2f}x, CPU {f_cpu / b_cpu:.2f}x")
    print("stages (last repetition): " + ", ".join(f"{k} {v:.2f} s" for k, v in last["timings"].items()))
    ok = f_s <= 20.0 and f_mb <= 2048
    print(f"requirement (<= 20 s, <= 2048 MB): {'met' if ok else 'NOT met'}")


def _load(root: Path, repeat: int) -> None:
    """load_runs alone: files parsed (cache=False) vs re-read from the load cache (warm)."""
    first = _child(CHILD_LOAD, root, "on")  # writes (or refreshes) the cache
    cold, warm = [], []
    for _ in range(repeat):
        cold.append(_child(CHILD_LOAD, root, "off"))
        warm.append(_child(CHILD_LOAD, root, "on"))
    c_s, w_s = statistics.median(r["seconds"] for r in cold), statistics.median(r["seconds"] for r in warm)
    c_cpu, w_cpu = statistics.median(r["cpu_s"] for r in cold), statistics.median(r["cpu_s"] for r in warm)
    print(f"load_runs {first['runs']} runs: first load writing the cache {first['seconds']:.2f} s wall; "
          f"cold (cache=False) {c_s:.2f} s wall, {c_cpu:.2f} s CPU; warm (cache) {w_s:.2f} s wall, "
          f"{w_cpu:.2f} s CPU; ratio cold/warm wall {c_s / w_s:.1f}x, CPU {c_cpu / w_cpu:.1f}x")
    print(f"requirement (warm re-read <= 2 s): {'met' if w_s <= 2.0 else 'NOT met'} (wall), "
          f"{'met' if w_cpu <= 2.0 else 'NOT met'} (CPU)")


if __name__ == "__main__":
    main()
