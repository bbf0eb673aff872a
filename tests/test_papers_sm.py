"""Issue 11, Stickland & Murray: whole-model tr(F) for fully fine-tuned runs (Figure 1)."""

from __future__ import annotations

import pytest

from fisherlab.analysis import load_runs
from fisherlab.analysis.final import final_traces
from fisherlab.runs import RunWriter


def _run(root, name, task_module, steps):
    writer = RunWriter.create(root / name, {"method": "standard", "seed": 0, "model": "m", "task": "t",
                                            "task_module": task_module})
    for step, traces in steps.items():
        writer.log_fisher([{"block": b, "layer": layer, "trace": t, "trainable": True}
                           for b, (layer, t) in traces.items()], step)
    writer.write_results("accuracy", "en", {"en": 80.0, "de": 70.0})
    writer.finish()


def test_final_trace_is_the_whole_model_for_full_fine_tuning(tmp_path):
    blocks = lambda scale: {"embeddings": (None, 10.0 * scale), "layer.0": (0, 1.0 * scale),  # noqa: E731
                            "layer.1": (1, 2.0 * scale), "head": (None, 5.0 * scale)}
    _run(tmp_path, "full", "full", {0: blocks(1.0), 10: blocks(2.0)})
    _run(tmp_path, "adapter", "seq_bn", {0: blocks(1.0), 10: blocks(3.0)})
    final = final_traces(load_runs(tmp_path)).set_index("run_id")
    full = next(i for i in final.index if i.endswith("full"))
    adapter = next(i for i in final.index if i.endswith("adapter"))
    # full fine-tuning: embeddings + layers + head at the last probe (step 10), not a per-layer mean
    assert final.loc[full, "final_trace"] == pytest.approx(2.0 * (10 + 1 + 2 + 5))
    assert final.loc[full, "trace_scope"] == "whole_model" and final.loc[full, "final_step"] == 10
    # adapters: the trainable layer blocks only (head and embeddings excluded)
    assert final.loc[adapter, "final_trace"] == pytest.approx(3.0 * (1 + 2))
    assert final.loc[adapter, "trace_scope"] == "trainable_layers"



def test_figures_1_and_2_say_whole_model_and_label_penalties_with_fpen(tmp_path, monkeypatch):
    """Fully fine-tuned runs: the x axis of both figures is the whole model's tr(F) and says so
    (it used to read "sum over trainable layer blocks"); a Fisher penalty's point carries the
    note's weight fpen (here alpha * B = 0.032 for a scaled penalty), not fisherlab's alpha."""
    import fisherlab.plots as plots
    from fisherlab.report import build_report

    store = tmp_path / "store"
    kinds = [("none", 0.0, None), ("fisher_penalty", 0.001, 0.032), ("l2", 0.01, None)]
    for i, (kind, weight, fpen) in enumerate(kinds):
        writer = RunWriter.create(store / kind, {"method": f"standard+{kind}", "seed": 0, "model": "m", "task": "t",
                                                 "task_module": "full",
                                                 "regulariser": {"kind": kind, "weight": weight, "fpen": fpen}},
                                  fisher={"estimator": "per_example"})
        for step in (0, 10):
            writer.log_fisher([{"block": "embeddings", "layer": None, "trace": 4.0 + i, "trainable": True},
                               {"block": "layer.0", "layer": 0, "trace": 1.0 + step, "trainable": True},
                               {"block": "head", "layer": None, "trace": 2.0, "trainable": True}], step)
        writer.log_metric(10, "two_stage_gain", "de", "accuracy", 1.0 + i)
        writer.write_results("accuracy", "en", {"en": 80.0 - i, "de": 70.0})
        writer.finish()
    seen: dict[str, dict] = {}
    for name in ("plot_trace_vs_accuracy", "plot_two_stage_gain"):
        original = getattr(plots, name)

        def spy(data, *args, _original=original, _name=name, **kwargs):
            seen[_name] = {"data": data.copy(), **kwargs}
            return _original(data, *args, **kwargs)

        monkeypatch.setattr(plots, name, spy)
    result = build_report([store], tmp_path / "out", figures=("regulariser", "two_stage"), n_boot=40, n_perm=40)
    assert set(result.figures) == {"regulariser", "two_stage"}, result.skipped
    for name in seen:
        assert "whole model" in seen[name]["xlabel"] and "trainable layer" not in seen[name]["xlabel"]
        assert set(seen[name]["data"]["final_trace"]) == {4.0 + i + 11.0 + 2.0 for i in range(3)}
    points = seen["plot_trace_vs_accuracy"]["data"].set_index("regulariser")
    assert points.loc["fisher_penalty", "weight"] == pytest.approx(0.032)
    assert points.loc["l2", "weight"] == pytest.approx(0.01) and points.loc["none", "weight"] == 0.0
    html = result.html.read_text()
    assert "last probe step (whole model;" in html and "fpen" in html


# -- the testbed study (analyses/regularisers/testbed_commands.py) --------------------------------
def _study():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "analyses" / "regularisers" / "testbed_commands.py"
    spec = importlib.util.spec_from_file_location("regularisers_testbed_commands", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_parse(argv):
    """``argv`` (starting with "fisherlab") parsed by the CLI's own click command, without running it:
    (subcommand name, its options, the flags it passes on to the run config)."""
    import typer

    from fisherlab.cli import app

    assert argv[0] == "fisherlab"
    group = typer.main.get_command(app)
    command = group.get_command(None, argv[1])
    assert command is not None, f"no CLI command {argv[1]!r}"
    context = command.make_context(argv[1], list(argv[2:]))
    return argv[1], context.params, list(context.args)


def test_testbed_study_commands_are_valid_two_stage_runs(tmp_path):
    from fisherlab.config import parse_config, validate_static
    from fisherlab.spec.regularisers import regulariser_family
    from fisherlab.testbed.world import world_config

    study = _study()
    commands = study.commands(str(tmp_path / "runs"))
    world = world_config("default")
    source = world.source_language
    kinds: dict[str, set[int]] = {}
    weights: dict[str, set[float]] = {}
    run_dirs = []
    for argv in commands:
        name, params, flags = _cli_parse(argv)
        assert name == "two-stage"
        targets = params["targets"].split(",")
        assert len(targets) == 3 and source not in targets and set(targets) <= set(world.language_codes)
        assert params["stage2_max_steps"] and params["stage2_max_steps"] > 0
        config = parse_config(params["config"], flags)
        validate_static(config)  # task, strategy, estimator, regulariser strings
        assert config.task.task == "testbed" and config.model.task_module == "full"
        assert config.model.lang_adapters is None  # full fine-tuning without language adapters
        evaluated = config.task.languages.split(",")
        assert source in evaluated and set(targets) <= set(evaluated)
        assert config.probe.probe_every > 0 and (config.training.max_steps > 0 or config.training.num_train_epochs > 0)
        labels = config.labels()
        kind = regulariser_family(labels["regulariser"]) or labels["regulariser"]
        kinds.setdefault(kind, set()).add(config.training.seed)
        weights.setdefault(kind, set()).add(labels["regulariser_weight"])
        if kind == "fisher_penalty":  # the note's scale: fpen = alpha
            assert labels["fpen"] == pytest.approx(labels["regulariser_weight"])
        else:
            assert labels["fpen"] is None
        run_dirs.append(config.run.run_dir)
    assert len(set(run_dirs)) == len(commands) and all(d.startswith(str(tmp_path / "runs")) for d in run_dirs)
    assert set(kinds) == {"none", "fisher_penalty", "consistency", "l2"}
    assert all(len(seeds) >= 3 for seeds in kinds.values())
    assert all(len(weights[k]) >= 3 for k in kinds if k != "none") and weights["none"] == {0.0}
    # the run names are readable: <kind>-<weight>-s<seed>
    names = [d.rsplit("/", 1)[-1] for d in run_dirs]
    assert "none-s0" in names and "fpen-0.01-s0" in names


def test_testbed_study_report_command_draws_both_figures():
    from fisherlab.report import parse_figures

    name, params, flags = _cli_parse(_study().report_command("runs", "report"))
    assert name == "analyze" and not flags
    assert params["runs"] == ["runs"] and params["out"] == "report"
    assert {"regulariser", "two_stage"} <= set(parse_figures(params["figures"]))


def test_mvr_is_refused_on_the_word_level_testbed_tokenizer(tiny_testbed):
    """The note's consistency loss (MVR) needs subword segmentations; the testbed's tokenizer is
    word level, so the testbed study uses a dropout view instead (README)."""
    from fisherlab.regularisers import RegulariserError, regulariser_from_string

    with pytest.raises(RegulariserError, match="WordLevel"):
        regulariser_from_string("mvr:weight=1", tokenizer=tiny_testbed.tokenizer())


def test_mvr_on_the_testbed_fails_before_the_run_naming_the_field(tiny_testbed, tmp_path):
    """``fisherlab two-stage ... --regularisers mvr:...`` on the word-level testbed stops in
    ``prepare_run`` with a ConfigError naming ``regularisers`` and the spec; no run directory."""
    import json

    from typer.testing import CliRunner

    from fisherlab.cli import app

    target = next(lang for lang in tiny_testbed.languages if lang != tiny_testbed.source_language)
    run_dir = tmp_path / "mvr"
    result = CliRunner().invoke(app, [
        "two-stage", "--targets", target, "--task", "testbed", "--task_options",
        json.dumps({"path": str(tiny_testbed.root)}), "--task_module", "full", "--max_steps", "2",
        "--use_cpu", "true", "--progress", "false", "--run_dir", str(run_dir), "--regularisers", "mvr:weight=1"])
    assert result.exit_code == 2, result.output
    assert "regularisers: 'mvr:" in result.output and "WordLevel" in result.output
    assert not run_dir.exists()
