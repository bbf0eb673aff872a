"""README.md's "Use it" section runs as written: every python block exec'd in order in one namespace
(seeded with tests/readme_fixture.py's objects), every `fisherlab ...` line of its bash blocks run through
the CLI, all in an empty directory where `examples/` is the repository's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from own_path_helpers import link_tiny_testbed
from readme_fixture import readme_namespace
from typer.testing import CliRunner

from fisherlab.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def use_it_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Use it"):]
    section = section[:section.index("\n## ", 3)]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def test_use_it_has_the_blocks_it_promises():
    kinds = [kind for kind, _ in use_it_blocks()]
    assert kinds.count("python") >= 3 and "bash" in kinds
    code = "\n".join(body for _, body in use_it_blocks())
    assert "FisherlabRun" in code and "run.finish" in code and "examples/train.yaml" in code


def test_readme_use_it_snippets_run_as_written(tiny_testbed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FISHERLAB_CACHE", str(tmp_path / "cache"))
    link_tiny_testbed(tiny_testbed, tmp_path / "cache")
    (tmp_path / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    namespace = readme_namespace(tiny_testbed)
    for kind, body in use_it_blocks():
        if kind == "python":
            exec(compile(body, "README.md", "exec"), namespace)  # noqa: S102 -- the README's own code
            continue
        for line in body.splitlines():
            if line.startswith("fisherlab "):
                argv = shlex.split(line.split("#")[0])[1:]
                if argv[0] in ("train", "sweep"):
                    argv.append("--quiet" if argv[0] == "sweep" else "--progress=false")
                if argv[0] == "analyze":
                    argv += ["--no-progress", "--n-boot", "20", "--n-perm", "20"]
                result = CliRunner().invoke(app, argv)
                assert result.exit_code == 0, f"{line}\n{result.output}"
    from fisherlab.runs import read_run

    own = read_run(tmp_path / "runs" / "own-0")
    assert own.info["status"] == "completed" and own.info["labels"]["method"] == "fisher"
    assert set(own.results["per_language"]) == set(tiny_testbed.languages)
    assert (tmp_path / "report" / "report.html").is_file()
    assert {"fisher", "standard", "gradual"} <= set(namespace["runs"].runs["method"])
