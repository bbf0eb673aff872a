"""`fisherlab analyze` / build_report on synthetic stores, damaged ones included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fisherlab.analysis import load_runs
from fisherlab.analysis.synthetic import write_synthetic_store
from fisherlab.cli import app
from fisherlab.report import FIGURES, ReportError, build_report, parse_figures, safe_filename
from fisherlab.runs import RunWriter

EVIL = "<script>alert(1)</script>"
DOTS = "../../escape"
FAST = {"n_boot": 40, "n_perm": 40}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _damaged_store(root: Path) -> Path:
    """8 synthetic runs, then: truncated line, NaN/inf traces, no results, format 99, duplicates."""
    store = root / "store"
    names = [f"run-{i}" for i in range(8)]
    names[2], names[3] = EVIL, DOTS
    paths = write_synthetic_store(store, n_runs=8, methods=("standard", "gradual", "fisher", "permutation"),
                                  seeds=(0, 1), n_steps=16, n_blocks=4, names=names)
    with (paths[0] / "fisher.jsonl").open("a") as fh:  # crash mid-write
        fh.write('{"step": 999, "block": "layer.0", "tra')
    with (paths[1] / "fisher.jsonl").open("a") as fh:
        fh.write('{"step": 1000, "block": "layer.0", "layer": 0, "trace": NaN}\n')
        fh.write('{"step": 1000, "block": "layer.1", "layer": 1, "trace": Infinity}\n')
    (paths[4] / "results.json").unlink()
    info = json.loads((paths[5] / "run.json").read_text())
    info["format"] = 99
    (paths[5] / "run.json").write_text(json.dumps(info))
    lines = (paths[6] / "fisher.jsonl").read_text().splitlines(keepends=True)
    (paths[6] / "fisher.jsonl").write_text("".join(lines + lines[:3]))
    return store


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("damaged")
    store = _damaged_store(root)
    result = build_report([store], root / "out", **FAST)
    return root, store, result


def test_damaged_store_report_completes_and_lists_problems(damaged):
    root, _, result = damaged
    page = result.html.read_text(encoding="utf-8")
    reasons = " ".join(result.problems["reason"].astype(str))
    for expected in ("truncated last line", "unknown run format version", "non-finite 'trace'",
                     "duplicated", "no results.json"):
        assert expected in reasons, expected
    actions = set(result.problems["action"].astype(str))
    assert "skipped run" in actions and "dropped line" in actions
    for reason in result.problems["reason"].astype(str):  # each listed (escaped) in the page
        assert reason.replace("'", "&#x27;").replace('"', "&quot;").split(" (")[0] in page
    assert result.summary["n_runs"] == 7 and result.summary["n_problems"] == len(result.problems)
    assert {"trace", "trace_validation", "order", "relative", "feature_result"} <= set(result.figures)
    # absent inputs are notes, not errors
    assert set(result.skipped) == {"regulariser", "two_stage", "language_trace", "language_relation",
                                   "language_ranking"}  # no target-language rows: skipped, with the reason
    assert "Skipped: no regulariser runs" in page


def test_user_text_is_escaped_and_nothing_escapes_out(damaged):
    root, store, result = damaged
    page = result.html.read_text(encoding="utf-8")
    assert EVIL not in page and "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "../../escape" in page.replace("&#x27;", "'")  # shown, escaped, harmless
    out = root / "out"
    outside = {p for p in _files(root) if out not in p.parents and store not in p.parents}
    assert outside == set()
    for paths in result.figures.values():
        assert all(out in p.parents for p in paths)
    assert safe_filename(DOTS) == "escape" and "/" not in safe_filename(EVIL)


def test_same_input_gives_identical_files(damaged, tmp_path):
    root, store, first = damaged
    second = build_report([store], tmp_path / "again", **FAST)
    a, b = first.out_dir, second.out_dir
    names = sorted(p.relative_to(a) for p in _files(a))
    assert names == sorted(p.relative_to(b) for p in _files(b))
    assert any(n.suffix == ".pdf" for n in names) and any(n.suffix == ".csv" for n in names)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_figures_are_type42(damaged):
    _, _, result = damaged
    for paths in result.figures.values():
        pdf = next(p for p in paths if p.suffix == ".pdf").read_bytes()
        assert b"/Subtype /Type3" not in pdf and b"/FontFile2" in pdf


def test_summary_and_tables(damaged):
    _, _, result = damaged
    summary = json.loads(result.summary_path.read_text())
    assert summary["estimators"] == {"per_example": 7}
    assert summary["baseline"] == "standard"
    assert {"runs", "results", "methods", "features", "correlations", "problems"} <= set(summary["tables"])
    for name, rel in summary["tables"].items():
        assert (result.out_dir / rel).is_file(), name
    assert all(row["unit"] for row in summary["correlations"])
    assert "Unit of replication" in result.html.read_text()


REGULARISED = [("penalty", 0.1), ("penalty", 1.0), ("consistency", 0.1), ("consistency", 1.0), ("l2", 0.01)]


def _regulariser_store(root: Path, kinds: list[tuple[str, float]] = REGULARISED) -> Path:
    store = root / "reg"
    for i, (kind, weight) in enumerate(kinds):
        w = RunWriter.create(store / f"r{i}", {"method": kind, "seed": 0, "model": "m", "task": "t",
                                                "regulariser": {"kind": kind, "weight": weight}},
                             fisher={"estimator": "per_example"}, run_id=f"reg-{i}")
        for step in (0, 10, 20):
            w.log_fisher([{"block": "layer.0", "layer": 0, "trace": 10.0 / (1 + weight) + step,
                           "trainable": True, "n_examples": 8}], step=step)
        for lang in ("de", "zh"):
            w.log_metric(20, "two_stage_gain", lang, "accuracy", 2.0 - weight + (lang == "zh"))
        w.write_results("accuracy", "en", {"en": 70 + i, "de": 60 + i, "zh": 50 + i})
        w.finish()
    return store


def test_regulariser_and_two_stage_figures(tmp_path):
    store = _regulariser_store(tmp_path)
    result = build_report([store], tmp_path / "out", figures=("regulariser", "two_stage"), **FAST)
    assert set(result.figures) == {"regulariser", "two_stage"}, result.skipped
    assert result.skipped == {}


def test_regulariser_figure_skipped_when_every_run_is_unregularised(tmp_path):
    """train.py writes regulariser kind "none" for plain runs: no Stickland & Murray figure of them."""
    store = _regulariser_store(tmp_path, [("none", 0.0)] * 3)
    result = build_report([store], tmp_path / "out", figures=("regulariser",), **FAST)
    assert result.figures == {}
    assert "regulariser = 'none'" in result.skipped["regulariser"]


def test_method_colours_agree_across_figures(tmp_path, monkeypatch):
    """Every method-coloured figure gets the study-wide palette; feature_result used to colour
    only the methods with results, so unknown method names shifted colour between figures."""
    import fisherlab.plots as plots

    store = tmp_path / "store"
    write_synthetic_store(store, n_runs=6, methods=("standard", "gradual", "fisher"), seeds=(0, 1),
                          n_steps=10, n_blocks=3)
    seen: dict[str, object] = {}
    for name in ("plot_trace_curves", "plot_unfreezing_order", "plot_relative_performance",
                 "plot_feature_vs_result"):
        original = getattr(plots, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            seen[_name] = kwargs.get("palette")
            return _original(*args, **kwargs)

        monkeypatch.setattr(plots, name, spy)
    build_report([store], tmp_path / "out", figures=("trace", "order", "relative", "feature_result"), **FAST)
    want = plots.method_colors(["standard", "gradual", "fisher"])
    assert set(seen) == {"plot_trace_curves", "plot_unfreezing_order", "plot_relative_performance",
                         "plot_feature_vs_result"}
    assert all(palette == want for palette in seen.values()), seen


def test_mixed_estimators_facet_or_refuse(tmp_path):
    store = tmp_path / "mixed"
    write_synthetic_store(store / "a", n_runs=4, methods=("standard", "gradual"), seeds=(0, 1),
                          n_steps=10, n_blocks=3, estimator="per_example")
    write_synthetic_store(store / "b", n_runs=4, methods=("standard", "gradual"), seeds=(0, 1),
                          n_steps=10, n_blocks=3, estimator="exact", names=[f"x{i}" for i in range(4)])
    runset = load_runs([store])
    faceted = build_report(runset, tmp_path / "facet", figures=("trace",), **FAST)
    assert "trace" in faceted.figures
    assert faceted.summary["estimators"] == {"exact": 4, "per_example": 4}
    assert "different estimators" in faceted.html.read_text()
    refused = build_report(runset, tmp_path / "refuse", figures=("trace",), estimator_policy="refuse", **FAST)
    assert "trace" not in refused.figures
    assert "different estimators" in refused.skipped["trace"]


def test_cli_analyze(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(store, n_runs=6, methods=("standard", "gradual", "fisher"), seeds=(0, 1),
                          n_steps=10, n_blocks=3)
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(store), "--out", str(out), "--figures", "trace,order",
                              "--n-boot", "30", "--n-perm", "30", "--no-progress", "--baseline", "standard"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["order.pdf", "order.png", "trace.pdf",
                                                                   "trace.png"]
    assert (out / "summary.json").is_file() and (out / "tables" / "results.csv").is_file()
    # a second report into the same folder leaves no stale figure behind
    res = runner.invoke(app, ["analyze", str(store), "--out", str(out), "--figures", "trace",
                              "--n-boot", "30", "--n-perm", "30", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["trace.pdf", "trace.png"]
    # empty input and unknown figure names: clear errors, non-zero exit, nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["analyze", str(empty), "--out", str(tmp_path / "o2"), "--no-progress"])
    assert res.exit_code != 0 and "no run directories" in res.output
    assert not (tmp_path / "o2").exists()
    res = runner.invoke(app, ["analyze", str(store), "--out", str(tmp_path / "o3"), "--figures", "nope"])
    assert res.exit_code != 0 and "unknown figure" in res.output


def test_options_are_validated(tmp_path):
    with pytest.raises(ReportError, match="no input"):
        build_report([], tmp_path / "o")
    with pytest.raises(TypeError, match="unknown report option"):
        build_report([tmp_path], tmp_path / "o", colour="red")
    assert parse_figures("all") == tuple(FIGURES)
    assert parse_figures("order, trace") == ("order", "trace")


def test_analysis_side_never_imports_torch():
    """The whole analysis side (runs, analysis, plots, report, the CLI module) in one fresh process."""
    code = ("import sys, fisherlab.analysis, fisherlab.analysis.synthetic, fisherlab.runs, fisherlab.plots, "
            "fisherlab.report, fisherlab.cli; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_store_without_results_or_without_traces(tmp_path):
    bare = tmp_path / "bare"
    write_synthetic_store(bare, n_runs=4, methods=("standard", "gradual"), seeds=(0, 1), n_steps=10,
                          n_blocks=3, results=False, metrics=False)
    result = build_report([bare], tmp_path / "o1", **FAST)
    assert set(result.figures) == {"trace", "order"}
    for name in ("trace_validation", "relative", "feature_result"):
        assert "result" in result.skipped[name], result.skipped[name]
    assert "No run has results" in result.html.read_text()

    no_fisher = tmp_path / "nofisher"
    for path in write_synthetic_store(no_fisher, n_runs=4, methods=("standard", "gradual"), seeds=(0, 1),
                                      n_steps=10, n_blocks=3):
        (path / "fisher.jsonl").unlink()
    result = build_report([no_fisher], tmp_path / "o2", **FAST)
    assert "relative" in result.figures and "order" in result.figures
    assert "tr(F) measurements" in result.skipped["trace"]
    assert "features" not in result.tables
