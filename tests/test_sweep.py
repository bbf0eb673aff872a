"""`fisherlab sweep`: planning (names, strategies, permutation orders), a tiny local sweep,
reuse, resume after a failure, early errors, and the SLURM path with a fake submitit."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest
from transformers import TrainerCallback
from typer.testing import CliRunner

import fisherlab.train
from fisherlab.analysis import load_runs
from fisherlab.analysis.schedules import count_permutation_schedules, unfreezing_orders
from fisherlab.cli import app
from fisherlab.sweep import MANIFEST, plan_sweep, run_sweep
from fisherlab.train import ConfigError
from fisherlab.unfreezing import strategy_from_string

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def testbed4(tmp_path_factory):
    """The tiny world with 4 encoder layers: 2 layers admit no permutation schedule besides top-down."""
    from fisherlab.testbed import build_testbed, tiny_world_config

    config = tiny_world_config(seed=0)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_layers=4))
    return build_testbed(config, tmp_path_factory.mktemp("testbed") / "tiny4", progress=False)


def _layers(testbed) -> int:
    return json.loads((Path(testbed.base_dir) / "config.json").read_text())["num_hidden_layers"]


def _flags(testbed, *extra: str) -> list[str]:
    return [
        "--task", "testbed", "--task_options", json.dumps({"path": str(testbed.root)}),
        "--max_steps", "4", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--eval_strategy", "steps", "--eval_steps", "4", "--logging_steps", "2",
        "--save_strategy", "steps", "--save_steps", "2", "--use_cpu", "true",
        "--probe_every", "2", "--probe_batches", "1", "--max_eval_samples", "16",
        "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--progress", "false", *extra,
    ]


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


# --------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------
def test_plan_crosses_methods_seeds_and_sampled_permutations(testbed4, tmp_path):
    n_layers = _layers(testbed4)
    plan = plan_sweep(None, _flags(testbed4), methods=("standard", "gradual", "fisher"), seeds=(0, 1),
                      permutations=3, permutation_seed=5, k=7, out=tmp_path / "runs")
    names = [r.name for r in plan]
    assert names == ["standard-s0", "standard-s1", "gradual-s0", "gradual-s1", "fisher-s0", "fisher-s1",
                     "perm00-s0", "perm00-s1", "perm01-s0", "perm01-s1", "perm02-s0", "perm02-s1"]
    assert len({r.run_dir for r in plan}) == len(plan)
    assert all(r.run_dir == tmp_path / "runs" / r.name for r in plan)
    by_name = {r.name: r for r in plan}
    assert by_name["standard-s1"].strategy == "standard"
    assert by_name["gradual-s0"].strategy == "gradual:k=7"
    assert by_name["fisher-s1"].strategy == "fisher:k=7;n_batches=1;seed=1"  # probe_batches from the flags
    assert {r.method for r in plan} == {"standard", "gradual", "fisher", "permutation"}
    # the flags parse_config takes give exactly this run
    config = by_name["perm01-s1"].parse()
    assert (config.run.run_dir, config.training.seed, config.schedule.strategy, config.method) == (
        str(tmp_path / "runs" / "perm01-s1"), 1, by_name["perm01-s1"].strategy, "permutation")
    # sampled orders: distinct permutations, top layer first, then L-2 or L-3, never top-down;
    # the same order for every seed of a schedule
    perms = [r for r in plan if r.method == "permutation"]
    orders = {r.name.split("-")[0]: r.order for r in perms}
    assert all(r.order == orders[r.name.split("-")[0]] for r in perms)
    assert len(set(orders.values())) == 3
    for order in orders.values():
        assert sorted(order) == list(range(n_layers))
        assert order[0] == n_layers - 1 and order[1] in (n_layers - 2, n_layers - 3)
        assert order != tuple(range(n_layers - 1, -1, -1))
    for run in perms:
        strategy = strategy_from_string(run.strategy)
        assert tuple(strategy.order) == run.order and strategy.k == 7
    # deterministic in the permutation seed, different for another one
    again = plan_sweep(None, _flags(testbed4), methods=(), seeds=(0,), permutations=3, permutation_seed=5,
                       k=7, out=tmp_path / "runs")
    assert [r.order for r in again if r.name != "perm-topdown-s0"] == [orders[f"perm0{i}"] for i in range(3)]


def test_plan_adds_top_down_only_without_gradual_and_takes_k_from_the_strategy(testbed4, tmp_path):
    n_layers = _layers(testbed4)
    base = tmp_path / "base.yaml"
    base.write_text("strategy: gradual:k=9\nprobe_batches: 3\n")
    plan = plan_sweep(base, _flags(testbed4), methods=("standard",), seeds=(3,), permutations=2, out=tmp_path)
    assert [r.name for r in plan] == ["standard-s3", "perm00-s3", "perm01-s3", "perm-topdown-s3"]
    top_down = plan[-1]
    assert top_down.order == tuple(range(n_layers - 1, -1, -1)) and top_down.method == "top_down"
    assert top_down.strategy == f"permutation:order={','.join(map(str, top_down.order))};k=9"
    with_gradual = plan_sweep(base, _flags(testbed4), methods=("gradual",), seeds=(0,), permutations=2,
                              out=tmp_path)
    assert [r.name for r in with_gradual] == ["gradual-s0", "perm00-s0", "perm01-s0"]
    assert with_gradual[0].strategy == "gradual:k=9"
    # flags win over the file (probe_batches 1 from the flags), the sweep's strategy over the file's
    config = with_gradual[0].parse()
    assert config.schedule.strategy == "gradual:k=9" and config.probe.probe_batches == 1
    # --strategy among the extra flags would override every run's strategy: refused, with a hint
    with pytest.raises(ConfigError, match="^strategy: set per run.*--k"):
        plan_sweep(None, _flags(testbed4, "--strategy", "gradual:k=9"), methods=("standard",), out=tmp_path)


@pytest.mark.parametrize(("kwargs", "extra", "match"), [
    ({"methods": ("standard", "nonsense")}, (), "methods: .*nonsense"),
    ({"methods": ("standard",), "permutations": 2}, (), "^k: permutation"),
    ({"methods": ("gradual",)}, (), "^k: method 'gradual'"),
    ({"methods": ("standard",), "permutations": "too many"}, (), "^permutations: cannot sample"),
    ({"methods": ("standard",), "seeds": ()}, (), "^seeds"),
    ({"methods": ("standard",), "k": 2}, ("--seed", "4"), "^seed: set per run"),
    ({"methods": ("standard",), "k": 2}, ("--run_dir", "elsewhere"), "^run_dir: set per run"),
    ({"methods": ("standard",), "k": 2}, ("--probe_estimator", "bogus"), "^probe_estimator"),
    ({"methods": ("standard",), "k": 2}, ("--no_such_flag", "1"), "unknown command-line flag"),
])
def test_bad_input_fails_before_any_run(testbed4, tmp_path, monkeypatch, kwargs, extra, match):
    def never(*args, **kw):
        raise AssertionError("nothing may train on a bad sweep")

    monkeypatch.setattr(fisherlab.train, "run_training", never)
    if kwargs.get("permutations") == "too many":
        kwargs = {**kwargs, "permutations": count_permutation_schedules(_layers(testbed4)) + 1, "k": 2}
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match=match):
        run_sweep(plan_sweep(None, _flags(testbed4, *extra), out=out, **kwargs))
    assert not out.exists()


def test_cli_bad_method_exits_2_and_dry_run_writes_nothing(testbed4, tmp_path):
    out = tmp_path / "runs"
    bad = CliRunner().invoke(app, ["sweep", "--methods", "standard,bogus", "--out", str(out), "--",
                                   *_flags(testbed4)])
    assert bad.exit_code == 2 and "methods" in bad.output
    dry = CliRunner().invoke(app, ["sweep", "--methods", "standard,gradual", "--seeds", "2", "--k", "3",
                                   "--permutations", "1", "--out", str(out), "--dry-run", "--quiet", "--",
                                   *_flags(testbed4)])
    assert dry.exit_code == 0, dry.output
    assert "gradual-s1" in dry.output and "perm00-s1" in dry.output and "gradual:k=3" in dry.output
    assert "perm-topdown" not in dry.output  # gradual is among the methods
    assert "6 runs planned" in dry.output
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
class _FailAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"injected failure at step {self.step}")


def test_local_sweep_trains_records_failures_resumes_and_reuses(testbed4, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    plan = plan_sweep(None, _flags(testbed4), methods=("standard", "gradual"), seeds=(0,), permutations=2,
                      permutation_seed=1, k=1, out=out)
    assert [r.name for r in plan] == ["standard-s0", "gradual-s0", "perm00-s0", "perm01-s0"]
    real = fisherlab.train.run_training
    calls: list[tuple[str, bool, bool]] = []

    def failing(config, extra_callbacks=()):
        name = Path(config.run.run_dir).name
        calls.append((name, config.run.resume, config.run.overwrite))
        if name == "perm00-s0":  # fails mid-run, after its step-2 checkpoint
            return real(config, extra_callbacks=[_FailAt(3)])
        if name == "gradual-s0":  # fails before writing anything
            raise RuntimeError("no GPU today")
        return real(config)

    monkeypatch.setattr(fisherlab.train, "run_training", failing)
    result = run_sweep(plan, progress=False)
    assert result.statuses == {"standard-s0": "trained", "gradual-s0": "failed", "perm00-s0": "failed",
                               "perm01-s0": "trained"}
    manifest = _manifest(out)
    assert [r["name"] for r in manifest["runs"]] == [r.name for r in plan]
    errors = {r["name"]: r["error"] for r in manifest["runs"]}
    assert "no GPU today" in errors["gradual-s0"] and "injected failure" in errors["perm00-s0"]
    assert errors["standard-s0"] is None
    assert json.loads((out / "perm00-s0" / "run.json").read_text())["status"] == "failed"

    # second pass: completed runs reused, the failed one with a checkpoint resumed, the other started
    calls.clear()
    monkeypatch.setattr(fisherlab.train, "run_training", lambda config, extra_callbacks=(): (
        calls.append((Path(config.run.run_dir).name, config.run.resume, config.run.overwrite)), real(config))[1])
    result = run_sweep(plan, progress=False)
    assert result.statuses == {"standard-s0": "reused", "gradual-s0": "trained", "perm00-s0": "trained",
                               "perm01-s0": "reused"}
    assert calls == [("gradual-s0", False, False), ("perm00-s0", True, False)]
    assert {r["status"] for r in _manifest(out)["runs"]} == {"trained", "reused"}

    runset = load_runs(out)
    runs = runset.runs.set_index("run_id")
    assert len(runs) == 4 and set(runs["status"]) == {"completed"}
    assert sorted(runs["method"]) == sorted(r.method for r in plan)
    assert sorted(runs["strategy_spec"]) == sorted(r.strategy for r in plan)
    # the realised unfreezing order of each permutation run is its planned order
    orders = unfreezing_orders(runset)
    for run in plan:
        if run.order is None:
            continue
        realised = orders[orders["run_id"].map(lambda rid, name=run.name: rid.endswith(name))]
        assert tuple(realised.sort_values("position")["layer"]) == run.order

    # a third pass (from the command line, same plan) trains nothing
    monkeypatch.setattr(fisherlab.train, "run_training", lambda *a, **kw: pytest.fail("reused runs retrained"))
    cli = CliRunner().invoke(app, ["sweep", "--methods", "standard,gradual", "--permutations", "2",
                                   "--permutation-seed", "1", "--k", "1", "--out", str(out), "--quiet", "--",
                                   *_flags(testbed4)])
    assert cli.exit_code == 0, cli.output
    assert "4 runs (4 reused)" in cli.output and str(out / MANIFEST) in cli.output
    assert f"fisherlab analyze {out} --out {out / 'report'}" in cli.output


def test_existing_run_of_another_schedule_is_refused(testbed4, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    (out / "gradual-s0").mkdir(parents=True)
    (out / "gradual-s0" / "run.json").write_text(json.dumps(
        {"format": 1, "status": "completed", "config": {"strategy": "gradual:k=99", "seed": 0}}))
    plan = plan_sweep(None, _flags(testbed4), methods=("standard", "gradual"), k=1, out=out)
    monkeypatch.setattr(fisherlab.train, "run_training", lambda *a, **kw: pytest.fail("must not train"))
    with pytest.raises(ConfigError, match="holds a different run"):
        run_sweep(plan, progress=False)


# --------------------------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------------------------
def test_slurm_without_submitit_says_how_to_install(testbed4, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    plan = plan_sweep(None, _flags(testbed4), methods=("standard",), out=tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"pip install 'fisherlab\[slurm\]'"):
        run_sweep(plan, executor="slurm", progress=False)
    result = CliRunner().invoke(app, ["sweep", "--methods", "standard", "--out", str(tmp_path / "runs"),
                                      "--executor", "slurm", "--quiet", "--", *_flags(testbed4)])
    assert result.exit_code == 2 and "fisherlab[slurm]" in result.output


def test_slurm_builds_one_job_per_unfinished_run(testbed4, tmp_path, monkeypatch):
    from fisherlab.sweep import execute_planned

    made: list[dict] = []

    class FakeJob:
        def __init__(self, job_id):
            self.job_id = job_id

    class FakeExecutor:
        def __init__(self, folder):
            self.record = {"folder": folder, "parameters": {}, "submitted": []}
            made.append(self.record)

        def update_parameters(self, **kwargs):
            self.record["parameters"].update(kwargs)

        def submit(self, fn, *args):
            self.record["submitted"].append((fn, args))
            return FakeJob(str(100 + len(self.record["submitted"])))

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=FakeExecutor))
    out = tmp_path / "runs"
    (out / "standard-s0").mkdir(parents=True)
    (out / "standard-s0" / "run.json").write_text(json.dumps(
        {"format": 1, "status": "completed", "config": {"strategy": "standard", "seed": 0}}))
    plan = plan_sweep(None, _flags(testbed4), methods=("standard", "gradual"), seeds=(0, 1), k=2, out=out)
    result = run_sweep(plan, executor="slurm", progress=False,
                       slurm_options={"timeout_min": 30, "slurm_partition": "gpu"})
    assert result.statuses == {"standard-s0": "reused", "standard-s1": "submitted", "gradual-s0": "submitted",
                               "gradual-s1": "submitted"}
    (record,) = made
    assert record["folder"].startswith(str(out))
    assert record["parameters"]["timeout_min"] == 30 and record["parameters"]["slurm_partition"] == "gpu"
    submitted = record["submitted"]
    assert [fn for fn, _ in submitted] == [execute_planned] * 3
    assert [args[0].name for _, args in submitted] == ["standard-s1", "gradual-s0", "gradual-s1"]
    jobs = {r["name"]: r.get("job_id") for r in _manifest(out)["runs"]}
    assert jobs == {"standard-s0": None, "standard-s1": "101", "gradual-s0": "102", "gradual-s1": "103"}


def test_quiet_console_still_writes_each_runs_log(tmp_path, capsys):
    """--quiet silences the console; a run's output still lands in its train.log (not on the terminal)."""
    import logging

    from fisherlab.sweep.console import LOG_FILE, SweepConsole
    from fisherlab.sweep.plan import PlannedRun

    run = PlannedRun(name="standard-s0", run_dir=tmp_path / "standard-s0", strategy="standard", method="standard",
                     seed=0, sweep_dir=tmp_path)
    handler = logging.StreamHandler()  # a terminal handler, as transformers installs one
    logger = logging.getLogger("fisherlab.test_quiet")
    logger.addHandler(handler)
    try:
        with SweepConsole([run], enabled=False) as console:
            with console.run(run) as callbacks:
                print("trainer says hello")
                logger.warning("logged warning")
            console.finished(run, {"status": "trained"})
    finally:
        logger.removeHandler(handler)
    assert callbacks == []
    captured = capsys.readouterr()
    assert "hello" not in captured.out + captured.err and "logged warning" not in captured.err
    log = (tmp_path / "standard-s0" / LOG_FILE).read_text()
    assert "trainer says hello" in log and "logged warning" in log
