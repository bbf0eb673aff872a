"""``fisherlab testbed build``: builds into --out, reuses it, names bad input."""

from __future__ import annotations

from typer.testing import CliRunner

from fisherlab.cli import app


def test_build_reuses_and_reports(tiny_testbed):
    runner = CliRunner()
    result = runner.invoke(app, ["testbed", "build", "--world", "tiny", "--out", str(tiny_testbed.root), "--quiet"])
    assert result.exit_code == 0, result.output
    assert str(tiny_testbed.root) in result.output and "en, sov, inv" in result.output


def test_bad_world_is_named(tmp_path):
    result = CliRunner().invoke(app, ["testbed", "build", "--world", "huge", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown preset 'huge'" in result.output
