"""The notebooks run, cell by cell, on the shipped demo run store (no kernel needed, no torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

RUNNER = """
import json, sys
import matplotlib
matplotlib.use("Agg")
notebook = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for index, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] == "code":
        source = "".join(cell["source"])
        try:
            exec(compile(source, f"{sys.argv[1]}[cell {index}]", "exec"), namespace)
        except Exception:
            print(f"cell {index} failed:\\n{source}", file=sys.stderr)
            raise
assert "torch" not in sys.modules, "a notebook on the analysis side imported torch"
print("ok")
"""


def test_there_are_notebooks_and_demo_runs():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
    assert (REPO / "artifacts" / "demo" / "runs").is_dir()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(notebook)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
