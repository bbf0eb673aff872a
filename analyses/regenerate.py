"""Regenerate every shipped artifact (``artifacts/``) from the code in this checkout.

Run from the repository root::

    python analyses/regenerate.py                      # everything (~115 min of CPU: an hour or more on 2 cores)
    python analyses/regenerate.py --only fun,target-fisher --jobs 2

Parts, in order (each replaces its ``artifacts/<part>/`` folder; the others are left alone):

- ``testbeds``: build (or reuse from the cache) the testbed worlds the studies use
  (``default``, ``deep``).
- ``demo``: ``fisherlab demo`` (the README's command) -> ``artifacts/demo``.
- ``fun``: the FUN protocol on the testbed, ``analyses/fun/testbed.yaml`` -> ``artifacts/fun``.
- ``regularisers``: Stickland & Murray's Figures 1-2 on the testbed
  (``analyses/regularisers/testbed_commands.py``) -> ``artifacts/regularisers``.
- ``target-fisher``: label-free tr(F) on the target languages
  (``analyses/target-fisher/base.yaml``) -> ``artifacts/target-fisher``.

Every run trains into a staging directory (``--staging``, default a temporary folder);
the run store copied into ``artifacts/<part>/runs`` keeps each run's contract files
(``run.json``, ``fisher.jsonl``, ``schedule.jsonl``, ``metrics.jsonl``, ``results.json``) and
the sweep's ``sweep.json``; logs, checkpoints, stage-2 trainer folders and load caches stay
behind. The report is then written by ``fisherlab analyze`` from the copied store, so
what is shipped is exactly what the shipped analysis code makes of the shipped runs. Each
run's ``env`` records the code revision (``fisherlab_commit``, ``fisherlab_dirty``): run
this from a clean, committed checkout.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python analyses/regenerate.py` from a checkout that is not pip-installed
ARTIFACTS = REPO / "artifacts"
RUN_FILES = ("run.json", "fisher.jsonl", "schedule.jsonl", "metrics.jsonl", "results.json")
STORE_FILES = ("sweep.json",)
PARTS = ("testbeds", "demo", "fun", "regularisers", "target-fisher")
WORLDS = ("default", "deep")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"})
    return env


def fisherlab(*args: str, log: Path | None = None) -> None:
    """Run ``fisherlab ARGS`` (as ``python -m fisherlab.cli``) in the repository root; raise on failure."""
    command = [sys.executable, "-m", "fisherlab.cli", *args]
    print("$ fisherlab " + " ".join(args), flush=True)
    if log is None:
        subprocess.run(command, cwd=REPO, env=_env(), check=True)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        result = subprocess.run(command, cwd=REPO, env={**_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
                                stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"fisherlab {' '.join(args)} failed (exit {result.returncode}); see {log}")


def run_pool(commands: list[list[str]], jobs: int, logs: Path) -> None:
    """Run ``fisherlab`` argv lists (each starting with "fisherlab"), ``jobs`` at a time; all must succeed."""
    for argv in commands:
        if not argv or argv[0] != "fisherlab":
            raise ValueError(f"expected a command starting with 'fisherlab', got {argv!r}")
    done = 0
    start = time.perf_counter()

    def one(index_argv: tuple[int, list[str]]) -> None:
        nonlocal done
        index, argv = index_argv
        fisherlab(*argv[1:], log=logs / f"{index:03d}.log")
        done += 1
        print(f"  [{done}/{len(commands)}] {time.perf_counter() - start:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, enumerate(commands)))


def copy_store(source: Path, target: Path) -> int:
    """Copy a run store's contract files from ``source`` to ``target`` (replaced); returns the run count."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in STORE_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    runs = 0
    for run_json in sorted(source.rglob("run.json")):
        run_dir = run_json.parent
        if any(part in ("checkpoints", "two_stage") for part in run_dir.relative_to(source).parts):
            continue
        destination = target / run_dir.relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, destination / name)
        runs += 1
    for path in target.rglob("*"):  # files written by mkstemp are 0600; shipped files are world-readable
        path.chmod(0o755 if path.is_dir() else 0o644)
    return runs


def report(part: str, argv: list[str] | None = None) -> None:
    """Replace ``artifacts/<part>/report`` with ``fisherlab analyze`` of ``artifacts/<part>/runs``
    (``argv``: the study's own analyze command, starting with "fisherlab")."""
    out = ARTIFACTS / part / "report"
    if out.exists():
        shutil.rmtree(out)
    if argv is None:
        argv = ["fisherlab", "analyze", f"artifacts/{part}/runs", "--out", f"artifacts/{part}/report",
                "--no-progress", "--baseline", "standard"]
    fisherlab(*argv[1:])


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def part_testbeds(staging: Path, jobs: int) -> None:
    for world in WORLDS:
        fisherlab("testbed", "build", "--world", world, "--threads", str(jobs), "--quiet")


def part_demo(staging: Path, jobs: int) -> None:
    out = staging / "demo"
    fisherlab("demo", "--out", str(out), "--quiet")  # the README's command (runs on one process)
    n = copy_store(out / "runs", ARTIFACTS / "demo" / "runs")
    print(f"  demo: {n} runs", flush=True)
    report("demo")


def part_fun(staging: Path, jobs: int) -> None:
    out = staging / "fun" / "runs"
    fisherlab("sweep", "analyses/fun/testbed.yaml", "--out", str(out), "--jobs", str(jobs), "--quiet")
    n = copy_store(out, ARTIFACTS / "fun" / "runs")
    print(f"  fun: {n} runs", flush=True)
    report("fun")


def part_regularisers(staging: Path, jobs: int) -> None:
    study = _load(REPO / "analyses" / "regularisers" / "testbed_commands.py")
    out = staging / "regularisers" / "runs"
    run_pool(study.commands(str(out)), jobs, staging / "regularisers" / "logs")
    n = copy_store(out, ARTIFACTS / "regularisers" / "runs")
    print(f"  regularisers: {n} runs", flush=True)
    report("regularisers", study.report_command("artifacts/regularisers/runs", "artifacts/regularisers/report"))


TARGET_SEEDS = tuple(range(5))  # the sweep's --seeds 5
TARGET_K = 25


def target_fisher_commands(out: Path) -> list[list[str]]:
    """The target-fisher study's runs: the paper's methods by sweep, FUN by target-language tr(F) by train."""
    from fisherlab.testbed.world import world_config

    config = world_config("default")
    targets = ",".join(code for code in config.language_codes if code != config.source_language)
    base = "analyses/target-fisher/base.yaml"
    commands = [["fisherlab", "sweep", base, "--methods", "standard,gradual,fisher",
                 "--seeds", str(len(TARGET_SEEDS)), "--k", str(TARGET_K), "--out", str(out), "--quiet"]]
    for seed in TARGET_SEEDS:
        commands.append(["fisherlab", "train", base, "--seed", str(seed),
                         "--strategy", f"fisher:k={TARGET_K};data=target;languages={targets}",
                         "--run_dir", str(out / f"fisher_target-s{seed}")])
    return commands


def part_target_fisher(staging: Path, jobs: int) -> None:
    out = staging / "target-fisher" / "runs"
    sweep, *trains = target_fisher_commands(out)
    fisherlab(*sweep[1:], "--jobs", str(jobs))
    run_pool(trains, jobs, staging / "target-fisher" / "logs")
    n = copy_store(out, ARTIFACTS / "target-fisher" / "runs")
    print(f"  target-fisher: {n} runs", flush=True)
    report("target-fisher")


RUNNERS = {"testbeds": part_testbeds, "demo": part_demo, "fun": part_fun,
           "regularisers": part_regularisers, "target-fisher": part_target_fisher}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (processes)")
    parser.add_argument("--staging", default=None, help="where runs train (default: a temporary folder)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in RUNNERS]
    if unknown:
        parser.error(f"--only: unknown parts {unknown}; expected some of {list(PARTS)}")
    staging = Path(args.staging) if args.staging else Path(tempfile.mkdtemp(prefix="fisherlab-artifacts-"))
    for part in PARTS:
        if part in parts:
            start = time.perf_counter()
            print(f"== {part}", flush=True)
            RUNNERS[part](staging, args.jobs)
            print(f"== {part}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
