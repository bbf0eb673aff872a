"""Issue 11, FUN paper: measurement-mode defaults, one curve definition, the presets of
Tables 3/4/15, per-method overrides in one sweep, the full fine-tuning baseline's
language adapters, the code revision in ``env``, and the paper configs of ``analyses/``
validated by a dry run with no hub, no data and no weights."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest

from fisherlab.config import ConfigError, parse_config
from fisherlab.presets import FUN_PRESETS, PAPER_BASE_MODELS, fun_preset
from fisherlab.presets.fun import PresetError
from fisherlab.spec.curve import curve_mask, curve_mean
from fisherlab.spec.strategies import strategy_from_string
from fisherlab.sweep import plan_sweep
from fisherlab.sweep.study import load_sweep_file, plan_study

ROOT = Path(__file__).resolve().parents[1]
ANALYSES = ROOT / "analyses"


# -- (2) measurement mode ---------------------------------------------------------------------
def test_measurement_mode_defaults_to_eval_everywhere_and_docs_say_why():
    from fisherlab.fisher.probe import FisherProbe
    from fisherlab.hf import FisherProbeCallback

    assert strategy_from_string("fisher:k=5").mode == "eval"
    assert inspect.signature(FisherProbe).parameters["mode"].default == "eval"
    assert inspect.signature(FisherProbeCallback).parameters["mode"].default == "eval"
    assert strategy_from_string("fisher:k=5").make_probe().mode == "eval"
    docs = (ROOT / "docs" / "unfreezing.md").read_text()
    assert "`train`: as the released code" not in docs  # the released code calls model.eval()
    assert "model.eval()" in docs


# -- (7) one curve definition -----------------------------------------------------------------
def test_curve_mean_excludes_the_head_and_frozen_blocks():
    traces = [1.0, 2.0, 4.0, 100.0]  # layer.0 (frozen), layer.1, layer.2, head
    trainable = [False, True, True, True]
    has_layer = [True, True, True, False]
    assert curve_mean(traces, trainable, has_layer) == pytest.approx(3.0)
    assert curve_mean(traces, trainable, has_layer, layers_only=False) == pytest.approx(106.0 / 3)
    assert math.isnan(curve_mean(traces, [False] * 4, has_layer))
    assert curve_mask(trainable, has_layer).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="differ in shape"):
        curve_mask([True], [True, False])


def test_report_curves_use_the_same_definition():
    from fisherlab.analysis import curves
    from fisherlab.hf import probe_callback

    assert curves.curve_mask is curve_mask and probe_callback.curve_mean is curve_mean


# -- (3) presets --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, base, overrides", [
    # Table 3, MNLI mBERT: 15 epochs, 5e-4, batch 128, linear; k-LPFT 25, k-GU 800, k-FUN 50
    ("table3/mbert-xnli", {"num_train_epochs": 15, "learning_rate": 5e-4, "per_device_train_batch_size": 128,
                           "lr_scheduler_type": "linear", "base": "bert-base-multilingual-cased"},
     {"lpft": {"k": 25}, "gradual": {"k": 800}, "fisher": {"k": 50}}),
    # Table 3, COPA XLM-R: 500/5000 epochs, 1e-4/1e-5, batch 64, constant; k 800 / 1000 / 1000
    ("table3/xlmr-xcopa", {"num_train_epochs": 500, "learning_rate": 1e-4, "per_device_train_batch_size": 64,
                           "lr_scheduler_type": "constant", "probe_every": 50},
     {"lpft": {"k": 800, "num_train_epochs": 5000, "learning_rate": 1e-5},
      "fisher": {"k": 1000, "num_train_epochs": 5000, "learning_rate": 1e-5}}),
    # Table 3, SQuAD XLM-R: lr 2e-4/5e-4, k-FUN 100; used for MLQA and XQuAD
    ("table3/xlmr-mlqa", {"num_train_epochs": 15, "learning_rate": 2e-4}, {"fisher": {"k": 100, "learning_rate": 5e-4}}),
    ("table3/xlmr-xquad", {"learning_rate": 2e-4}, {"gradual": {"k": 800, "learning_rate": 5e-4}}),
    # Table 4: MNLI XLM-R 10k -> k 10; 1k -> k 1; SQuAD mBERT 5k -> 50; 20 / 50 epochs
    ("table4/xlmr-xnli-10k", {"num_train_epochs": 50, "max_train_samples": 10000}, {"fisher": {"k": 10}}),
    ("table4/mbert-xnli-1k", {"max_train_samples": 1000}, {"gradual": {"k": 1}}),
    ("table4/mbert-mlqa-5k", {"num_train_epochs": 20, "per_device_train_batch_size": 32}, {"fisher": {"k": 50}}),
    # Table 15 (LoRA): SQuAD mBERT lr 5e-4/8e-4; COPA XLM-R k-GU 100, k-FUN 200
    ("table15/mbert-xquad", {"task_module": "lora", "learning_rate": 5e-4, "lora_r": 8},
     {"gradual": {"k": 800, "learning_rate": 8e-4}}),
    ("table15/xlmr-xcopa", {"learning_rate": 1e-4}, {"gradual": {"k": 100, "num_train_epochs": 5000},
                                                     "fisher": {"k": 200, "num_train_epochs": 5000}}),
])
def test_presets_transcribe_the_papers_tables(name, base, overrides):
    preset = fun_preset(name)
    assert preset.source.startswith("Liu et al. (2024) Table")
    assert {k: preset.base[k] for k in base} == base
    for method, fields in overrides.items():
        assert dict(preset.method_overrides[method]) == fields, method
    assert "standard" not in preset.method_overrides


def test_preset_catalogue_and_unknown_name():
    assert "lpft" not in fun_preset("table15/mbert-xnli").method_overrides  # Table 15 has no LPFT
    assert len([n for n in FUN_PRESETS if n.startswith("table3/")]) == 8
    with pytest.raises(PresetError, match="unknown preset 'table9/x'.*table3/mbert-mlqa"):
        fun_preset("table9/x")


# -- (3) per-method overrides in one sweep ----------------------------------------------------
def _tiny(testbed) -> dict:
    """Base fields that point the sweep at the session's tiny testbed (planning resolves the task:
    without them it would build the default world)."""
    import json

    return {"task": "testbed", "task_options": json.dumps({"path": str(testbed.root)})}


def test_plan_sweep_applies_per_method_k_and_fields(tmp_path, tiny_testbed):
    plan = plan_sweep(None, methods=["standard", "lpft", "gradual", "fisher"], seeds=[0], k=7,
                      out=tmp_path / "runs", overrides={"learning_rate": 1e-3, **_tiny(tiny_testbed)},
                      method_overrides={"lpft": {"k": 25}, "fisher": {"k": 50, "learning_rate": 1e-5,
                                                                     "num_train_epochs": 9}})
    by = {r.method: r for r in plan}
    assert by["lpft"].strategy == "lpft:k=25" and by["gradual"].strategy == "gradual:k=7"
    assert strategy_from_string(by["fisher"].strategy).k == 50
    fisher = by["fisher"].parse()
    assert fisher.training.learning_rate == 1e-5 and fisher.training.num_train_epochs == 9
    assert by["standard"].parse().training.learning_rate == 1e-3


@pytest.mark.parametrize("overrides, match", [
    ({"nonsense": {"k": 2}}, "unknown method 'nonsense'"),
    ({"random": {"k": 2}}, "method 'random' is not planned"),
    ({"fisher": {"k": 0}}, r"method_overrides.fisher.k: must be a positive integer"),
    ({"fisher": {"seed": 3}}, "set per run by the sweep"),
])
def test_bad_method_overrides_fail_at_planning(tmp_path, overrides, match, tiny_testbed):
    with pytest.raises(ConfigError, match=match):
        plan_sweep(None, methods=["standard", "fisher"], k=5, out=tmp_path, method_overrides=overrides,
                   overrides=_tiny(tiny_testbed))


def test_sweep_file_merges_preset_and_own_overrides(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("sweep:\n  preset: table3/mbert-xnli\n  methods: [standard, fisher]\n  seeds: 2\n"
                    "  method_overrides: {fisher: {k: 60}}\nlearning_rate: 0.001\nlanguages: en,de\n")
    settings, base = load_sweep_file(path)
    assert settings["seeds"] == [0, 1] and settings["method_overrides"] == {"fisher": {"k": 60}}
    assert base["learning_rate"] == 0.001 and base["per_device_train_batch_size"] == 128
    plan = plan_study(path, out=tmp_path / "runs")
    assert [r.name for r in plan] == ["standard-s0", "standard-s1", "fisher-s0", "fisher-s1"]
    assert strategy_from_string(plan[2].strategy).k == 60
    path.write_text("sweep:\n  preset: table3/mbert-xnli\nlanguages: en,xx\n")
    with pytest.raises(ConfigError, match=r"languages: \['xx'\] are not languages of task 'xnli'"):
        plan_study(path, out=tmp_path / "runs")
    path.write_text("sweep:\n  preset: table3/mbert-xnli\n  method: [standard]\n")
    with pytest.raises(ConfigError, match="unknown sweep key"):
        plan_study(path, out=tmp_path / "runs")


# -- the paper configs: a dry run with no hub, no data and no weights ------------------------
def _paper_configs() -> list[Path]:
    """The paper-scale sweep files (``analyses/*/configs/``); the testbed studies' files are
    planned by tests/test_analyses_testbed.py (planning them would build a testbed world)."""
    return sorted(p for p in ANALYSES.rglob("*.yaml") if "configs" in p.relative_to(ANALYSES).parts
                  and "sweep:" in p.read_text())


@pytest.mark.parametrize("study", ["fun", "regularisers"])
def test_analyses_configs_are_the_generators_output(study):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"make_{study}", ANALYSES / study / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.configs()
    for rel, text in expected.items():
        assert (ANALYSES / study / rel).read_text() == text, rel
    shipped = {str(p.relative_to(ANALYSES / study)) for p in (ANALYSES / study / "configs").rglob("*.yaml")}
    assert shipped == set(expected)


def test_every_paper_config_plans_offline(tmp_path, monkeypatch):
    import transformers

    def no_hub(*args, **kwargs):
        raise AssertionError(f"a dry run must not touch the hub or load weights ({args})")

    for name in ("AutoConfig", "AutoModel", "AutoTokenizer", "AutoModelForSequenceClassification"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", no_hub)
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", no_hub)  # no data present: nothing may be read
    monkeypatch.delenv("FISHERLAB_DATA", raising=False)
    configs = _paper_configs()
    assert len(configs) >= 46 + 15
    tables = set()
    for path in configs:
        plan = plan_study(path, out=tmp_path / path.stem)
        assert plan, path
        tables.add(path.parent.name)
        for run in plan:
            strategy_from_string(run.strategy)
        config = plan[0].parse()
        assert config.model.base in PAPER_BASE_MODELS, path
    assert {"table3", "table4", "table7", "table15", "mdeberta", "figure1", "figure2"} <= tables
    # Table 3 cells: 5 methods + 9 permutation schedules (gradual is the top-down order), 3 seeds
    plan = plan_study(ANALYSES / "fun" / "configs" / "table3" / "mbert-xnli.yaml", out=tmp_path / "x")
    assert len(plan) == (5 + 9) * 3
    assert all(r.strategy.startswith("permutation:order=11,") for r in plan if r.method == "permutation")


def test_cli_dry_run_validates_a_paper_config(tmp_path):
    from typer.testing import CliRunner

    from fisherlab.cli import app

    path = ANALYSES / "fun" / "configs" / "table15" / "xlmr-xcopa.yaml"
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "9 runs planned" in result.output and "fisher:k=200" in result.output
    assert not (tmp_path / "runs").exists()


# -- (6) the full fine-tuning baseline has no language adapters unless asked ------------------
def test_full_fine_tuning_gets_no_language_adapters_by_default(tmp_path):
    from fisherlab.train import resolve_lang_adapters

    task_defaults = {"lang_adapters": {"en": "/adapters/en", "de": "/adapters/de"}}
    full = parse_config(None, (), {"task_module": "full", "run_dir": str(tmp_path)})
    assert resolve_lang_adapters(full, task_defaults) == {}
    asked = parse_config(None, (), {"task_module": "full", "lang_adapters": "en=/a/en", "run_dir": str(tmp_path)})
    assert resolve_lang_adapters(asked, task_defaults) == {"en": "/a/en"}
    adapter = parse_config(None, (), {"task_module": "seq_bn", "run_dir": str(tmp_path)})
    assert resolve_lang_adapters(adapter, task_defaults) == task_defaults["lang_adapters"]


# -- code revision in env -----------------------------------------------------------------------
def test_environment_records_the_code_revision():
    import subprocess

    import fisherlab
    from fisherlab.train import environment

    env = environment()
    assert env["fisherlab"] == fisherlab.__version__
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else None
    assert env["fisherlab_commit"] == expected
    assert env["fisherlab_dirty"] in (True, False, None)
    assert np.isscalar(env["threads"])


# -- (4) Figure 4: the permutation study only; QA = mean of MLQA and XQuAD ---------------------
def test_figure4_groups_permutation_and_top_down_with_qa_pairs():
    import pandas as pd

    from fisherlab.analysis import group_runs
    from fisherlab.analysis.figure4 import figure4_values

    rows = []
    for task, offset in (("mlqa", 0.0), ("xquad", 4.0)):
        for seed, (method, strategy) in enumerate([("permutation", "permutation:order=3,2,0,1;k=5"),
                                                   ("permutation", "permutation:order=3,1,2,0;k=5"),
                                                   ("top_down", "permutation:order=3,2,1,0;k=5"),
                                                   ("fisher", "fisher:k=5"), ("standard", "standard")]):
            rows.append({"run_id": f"{task}-{seed}", "xling_avg": 50.0 + seed + offset, "model": "m",
                         "task": task, "estimator": "per_example", "method": method, "strategy": strategy,
                         "seed": 0})
    rows.append({"run_id": "xnli-0", "xling_avg": 70.0, "model": "m", "task": "xnli", "estimator": "per_example",
                 "method": "gradual", "strategy": "gradual:k=5", "seed": 0})
    values, notes = figure4_values(pd.DataFrame(rows))
    assert set(values["method"]) == {"permutation", "top_down"}  # fisher, standard, gradual left out
    assert set(values["task"]) == {"qa"} and len(values) == 6
    by = values.set_index("run_id")["value"]
    assert by["mlqa-0"] == by["xquad-0"] == pytest.approx(52.0)  # (50 + 54) / 2
    assert by["mlqa-2"] == pytest.approx(54.0)
    groups = group_runs(values, delta=1.0, by=["model", "task", "estimator"])
    assert groups.set_index("run_id").loc["mlqa-2", "group"] == 0 and notes == []
    # a sweep that ran gradual (the top-down order) has no top_down run: gradual stands in for it
    swapped = pd.DataFrame([{**r, "method": "gradual"} if r["method"] == "top_down" else r for r in rows])
    values, _ = figure4_values(swapped)
    assert sorted(values.loc[values["method"] == "gradual", "run_id"]) == ["mlqa-2", "xquad-2"]
    assert "xnli-0" not in set(values["run_id"])  # a gradual run of a cell without permutation runs stays out
    # no permutation study at all: every run is grouped, and a note says so
    only = pd.DataFrame([r for r in rows if r["method"] in ("fisher", "standard")])
    values, notes = figure4_values(only)
    assert len(values) == 4 and "grouping every run" in notes[0]
