"""benchmarks/gpu_check.py cannot rot: its CPU smoke mode runs every stage at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def test_quick_cpu_run_writes_json_and_markdown(tmp_path):
    proc = _run("--device", "cpu", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(result["oracle"]) == {"per_example", "exact", "empirical"}
    assert all(v["ok"] and v["max_rel_err"] <= 1e-6 for v in result["oracle"].values())
    # bf16 autocast changes tr(F) a little but not much (bf16 has an 8-bit mantissa: ~0.4% per op)
    assert all(v["finite"] and 0 < v["max_rel_diff"] < 0.05 for v in result["precision"].values())
    fisher = result["costs"]["fisher"]
    assert fisher["precision"] == "bf16"
    for name in ("fwd+bwd", "trace_fisher:per_example", "trace_fisher:exact"):
        entry = fisher["methods"][name]
        assert entry["ratio"] > 0 and entry["examples_per_s"] > 0 and entry["memory_ratio"] > 0
    assert set(result["costs"]["fun"]["paper"]) and all(v["ratio"] > 1 for v in result["costs"]["fun"]["paper"].values())
    assert [r["strategy"].split(":")[0] for r in result["fun"]] == ["fisher", "gradual"]
    for run in result["fun"]:
        assert sorted(run["order"]) == [0, 1] and run["probe_measurements"] > 0 and run["all_finite"]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "## Oracle" in markdown and "trace_fisher:exact" in markdown and "MNLI mBERT" in markdown
    assert "[gpu_check] wrote" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_no_cuda_device_is_a_clear_error(tmp_path):
    proc = _run("--out", str(tmp_path))
    assert proc.returncode == 2
    assert "no CUDA device is available" in proc.stderr and "--device cpu --quick" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
