"""find_run_store: a store given from the repository root is found from the root and from below it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fisherlab.analysis import RUNS_ENV, find_run_store


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv(RUNS_ENV, raising=False)
    (tmp_path / "artifacts" / "study" / "runs").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def test_found_from_the_root_and_from_a_folder_below(repo):
    expected = repo / "artifacts" / "study" / "runs"
    assert find_run_store("artifacts/study/runs", start=repo) == expected
    assert find_run_store("artifacts/study/runs", start=repo / "notebooks") == expected
    assert find_run_store(Path("artifacts") / "study" / "runs", start=repo / "notebooks") == expected


def test_working_directory_is_the_default_start(repo, monkeypatch):
    monkeypatch.chdir(repo / "notebooks")
    assert find_run_store("artifacts/study/runs") == repo / "artifacts" / "study" / "runs"


def test_missing_store_names_what_it_looked_for_and_the_remedies(repo):
    with pytest.raises(FileNotFoundError) as err:
        find_run_store("artifacts/other/runs", start=repo / "notebooks", hint="run analyses/other first")
    message = str(err.value)
    assert "no artifacts/other/runs in" in message and str(repo / "notebooks") in message
    assert "run analyses/other first" in message and RUNS_ENV in message


def test_environment_variable_overrides_and_is_checked(repo, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv(RUNS_ENV, str(other))
    assert find_run_store("artifacts/study/runs", start=repo) == other
    assert find_run_store("artifacts/study/runs", start=repo, env=None) == repo / "artifacts" / "study" / "runs"
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=f"{RUNS_ENV}=.*nothing is not a directory"):
        find_run_store("artifacts/study/runs", start=repo)


def test_absolute_path_is_refused(repo):
    with pytest.raises(ValueError, match="repository root"):
        find_run_store(repo / "artifacts" / "study" / "runs")
