"""The testbed studies of analyses/ and the script that regenerates artifacts/ (no training here).

The studies' runs are checked by planning them (the FUN sweep file) or parsing their commands
(target-fisher); the worlds they train on are not built (minutes): the task resolution is
replaced and the layer count comes from the world's settings.
"""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", REPO / "analyses" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fun_testbed_study_plans_the_protocol(monkeypatch, tmp_path):
    """5 methods x 3 seeds + 9 distinct footnote-9 permutation schedules x 3 seeds, one k, world deep."""
    import fisherlab.config_resolve
    from fisherlab.sweep.plan import plan_sweep
    from fisherlab.sweep.study import load_sweep_file
    from fisherlab.testbed.world import world_config

    settings, base = load_sweep_file(REPO / "analyses" / "fun" / "testbed.yaml")
    world = json.loads(base["task_options"])["world"]
    layers = world_config(world).model.num_layers
    monkeypatch.setattr(fisherlab.config_resolve, "resolve_task", lambda config: config)  # no world build
    runs = plan_sweep(None, (), methods=settings["methods"], seeds=settings["seeds"],
                      permutations=settings["permutations"], permutation_seed=settings["permutation_seed"],
                      k=settings["k"], out=tmp_path, overrides=base, n_layers=layers)
    by_method: dict[str, list] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    assert {m: len(r) for m, r in by_method.items()} == {
        "standard": 3, "lpft": 3, "gradual": 3, "fisher": 3, "random": 3, "permutation": 27}
    orders = {run.order for run in by_method["permutation"]}
    assert len(orders) == 9
    top = layers - 1
    assert all(o[0] == top and o[1] in (top - 1, top - 2) and sorted(o) == list(range(layers)) for o in orders)
    assert tuple(range(top, -1, -1)) not in orders  # top-down is the gradual runs
    assert all(f"k={settings['k']}" in run.strategy for run in runs if run.method != "standard")
    assert settings["k"] == base["max_steps"] // (4 * layers)  # unfreezing ends in the first quarter


def test_target_fisher_commands_probe_every_target_and_score_fun_on_them():
    from fisherlab.config import parse_config
    from fisherlab.spec.strategies import strategy_from_string
    from fisherlab.testbed.world import world_config

    regenerate = _regenerate()
    commands = regenerate.target_fisher_commands(Path("/tmp/out"))
    sweep, trains = commands[0], commands[1:]
    assert sweep[:3] == ["fisherlab", "sweep", "analyses/target-fisher/base.yaml"]
    assert sweep[sweep.index("--methods") + 1] == "standard,gradual,fisher"
    assert len(trains) == len(regenerate.TARGET_SEEDS) == int(sweep[sweep.index("--seeds") + 1])
    config = world_config("default")
    targets = [c for c in config.language_codes if c != config.source_language]
    for seed, argv in zip(regenerate.TARGET_SEEDS, trains, strict=True):
        assert argv[argv.index("--seed") + 1] == str(seed)
        strategy = strategy_from_string(argv[argv.index("--strategy") + 1])
        assert strategy.label == "fisher_target" and list(strategy.languages) == targets
        assert argv[argv.index("--run_dir") + 1].endswith(f"fisher_target-s{seed}")
    parsed = parse_config(str(REPO / "analyses" / "target-fisher" / "base.yaml"),
                          overrides={"run_dir": "/tmp/out/x"})
    assert parsed.probe.probe_languages == "all" and parsed.probe.probe_every > 0


def test_copy_store_keeps_the_run_contract_files_only(tmp_path):
    regenerate = _regenerate()
    source, target = tmp_path / "staging", tmp_path / "artifacts" / "runs"
    run = source / "fisher-s0"
    (run / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (run / "two_stage" / "de").mkdir(parents=True)
    for name in regenerate.RUN_FILES:
        (run / name).write_text(name)
    (run / "train.log").write_text("log")
    (run / ".fisherlab-cache.pkl").write_text("cache")
    (run / "checkpoints" / "checkpoint-1" / "run.json").write_text("{}")  # not a run of the store
    (run / "two_stage" / "de" / "run.json").write_text("{}")
    (run / "run.json").chmod(0o600)
    (source / "sweep.json").write_text("{}")
    (target / "stale-run").mkdir(parents=True)
    assert regenerate.copy_store(source, target) == 1
    shipped = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert shipped == sorted(["sweep.json", *(f"fisher-s0/{n}" for n in regenerate.RUN_FILES)])
    assert stat.S_IMODE((target / "fisher-s0" / "run.json").stat().st_mode) == 0o644


def test_regenerate_names_its_parts():
    regenerate = _regenerate()
    with pytest.raises(SystemExit):
        regenerate.main(["--only", "nonsense"])
    assert list(regenerate.RUNNERS) == list(regenerate.PARTS)
