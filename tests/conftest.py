"""Shared test set-up: offline hubs, headless plots, the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A test that reaches for a hub is a bug: make it fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$FISHERLAB_DATA`` or ``../shared/data`` beside the checkout, if present."""
    env = os.environ.get("FISHERLAB_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real XCOPA/XQuAD files; skips with the reason when they are absent."""
    found = shared_data_dir()
    if found is None:
        pytest.skip("real data not found: set FISHERLAB_DATA or place ../shared/data beside the repo")
    return found


@pytest.fixture(scope="session")
def tiny_testbed(tmp_path_factory):
    """The tiny synthetic world, built once per session (seconds) into a temporary directory."""
    from fisherlab.testbed import build_testbed, tiny_world_config

    return build_testbed(tiny_world_config(seed=0), tmp_path_factory.mktemp("testbed") / "tiny", threads=1,
                         progress=False)


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny models are dominated by thread start-up on a shared
    2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
