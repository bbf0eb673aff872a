"""Every notebook runs in a real Jupyter kernel (nbclient + ipykernel) as a user would run it.

Each notebook is executed twice: from ``notebooks/`` (Jupyter's working directory for a
notebook) with ``MPLBACKEND=Agg`` (what CI sets; no inline backend), and from the
repository root with matplotlib's backend left to the kernel (inline). A run fails when a
code cell errors, when a cell that draws a figure shows no image (a figure printed as
``<Figure size ...>``), when a figure is shown twice, or when the notebook imported torch.

A notebook that measures tr(F) on a model imports torch by design; it says so in its
metadata, ``{"fisherlab": {"imports_torch": true}}``, and is then checked the other way
round (a stale declaration fails). Every other notebook is an analysis-side notebook.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the dev extra installs the kernel; a missing one is an error)
import nbclient
import nbclient.exceptions
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: A cell that calls a fisherlab plot function draws a figure and must show it as an image.
PLOT_CALL = re.compile(r"\bplot_\w+\s*\(")
IMAGE_TYPES = ("image/png", "image/svg+xml")
#: Appended to every notebook that does not declare ``imports_torch``: the analysis side never imports torch.
TORCH_CHECK = 'import sys\nassert "torch" not in sys.modules, "the notebook imported torch"'
#: Appended to a notebook that declares ``imports_torch``: the declaration must be true.
TORCH_DECLARED_CHECK = ('import sys\nassert "torch" in sys.modules, "the notebook declares '
                        'fisherlab.imports_torch but never imported torch: remove the declaration"')
#: The keys a notebook may set under ``metadata["fisherlab"]`` (value type).
METADATA_KEYS = {"imports_torch": bool}
SETTINGS = {
    "from-notebooks-dir-agg": {"cwd": REPO / "notebooks", "backend": "Agg"},
    "from-repo-root-inline": {"cwd": REPO, "backend": None},
}


def declared(notebook: nbformat.NotebookNode, name: str) -> dict:
    """The notebook's ``metadata["fisherlab"]``, checked: known keys of the right type only."""
    meta = notebook.metadata.get("fisherlab", {})
    if not isinstance(meta, dict):
        pytest.fail(f"{name}: metadata.fisherlab must be an object, got {meta!r}")
    unknown = sorted(set(meta) - set(METADATA_KEYS))
    if unknown:
        pytest.fail(f"{name}: unknown metadata.fisherlab key(s) {unknown}; known: {sorted(METADATA_KEYS)}")
    for key, kind in METADATA_KEYS.items():
        if key in meta and not isinstance(meta[key], kind):
            pytest.fail(f"{name}: metadata.fisherlab.{key} must be a {kind.__name__}, got {meta[key]!r}")
    return meta


def torch_check(notebook: nbformat.NotebookNode, name: str) -> str:
    """The cell appended to the notebook: torch not imported, or (declared) imported."""
    return TORCH_DECLARED_CHECK if declared(notebook, name).get("imports_torch", False) else TORCH_CHECK


def execute(path: Path, cwd: Path, backend: str | None, monkeypatch) -> nbformat.NotebookNode:
    """Run the notebook (plus the torch check) in a fresh ``python3`` kernel started in ``cwd``.

    The kernel is this interpreter (jupyter_client maps the ``python3`` spec's ``python``
    to ``sys.executable``), with the repository on PYTHONPATH so an uninstalled checkout
    works too.
    """
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(torch_check(notebook, path.name)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    if backend is None:
        monkeypatch.delenv("MPLBACKEND", raising=False)
    else:
        monkeypatch.setenv("MPLBACKEND", backend)
    monkeypatch.delenv("FISHERLAB_RUNS", raising=False)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} (cwd {cwd}, MPLBACKEND={backend}): a cell failed:\n{str(err)[-3000:]}")
    return notebook


def images(cell) -> int:
    return sum(1 for out in cell.get("outputs", []) if any(t in out.get("data", {}) for t in IMAGE_TYPES))


def figure_texts(cell) -> list[str]:
    """Outputs that show a figure as text only (``<Figure size 500x270 with 1 Axes>``)."""
    return [out["data"]["text/plain"] for out in cell.get("outputs", [])
            if "text/plain" in out.get("data", {}) and not any(t in out["data"] for t in IMAGE_TYPES)
            and out["data"]["text/plain"].lstrip().startswith("<Figure")]


def test_torch_check_follows_the_declaration():
    """Undeclared notebooks get the torch-free check; a declaration flips it; typos are refused."""
    plain = nbformat.v4.new_notebook()
    assert torch_check(plain, "plain") == TORCH_CHECK
    torchy = nbformat.v4.new_notebook(metadata={"fisherlab": {"imports_torch": True}})
    assert torch_check(torchy, "torchy") == TORCH_DECLARED_CHECK
    assert torch_check(nbformat.v4.new_notebook(metadata={"fisherlab": {"imports_torch": False}}), "off") == TORCH_CHECK
    for bad in ({"import_torch": True}, {"imports_torch": "yes"}, ["imports_torch"]):
        with pytest.raises(pytest.fail.Exception, match="metadata.fisherlab"):
            torch_check(nbformat.v4.new_notebook(metadata={"fisherlab": bad}), "bad")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(notebook):
    """Notebooks are committed cleared: outputs come from running them, never from the repository."""
    cells = nbformat.read(notebook, as_version=4).cells
    torch_check(nbformat.read(notebook, as_version=4), notebook.name)  # metadata is valid
    filled = [i for i, c in enumerate(cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not filled, f"{notebook.name}: code cells {filled} carry outputs or execution counts; clear them"


def test_there_are_notebooks_and_demo_runs():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
    assert (REPO / "artifacts" / "demo" / "runs").is_dir()


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_a_kernel_and_shows_figures(notebook, setting, monkeypatch):
    config = SETTINGS[setting]
    executed = execute(notebook, config["cwd"], config["backend"], monkeypatch)
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code_cells), "a code cell did not run"
    figure_cells = [c for c in code_cells if PLOT_CALL.search(c.source)]
    for cell in code_cells:
        assert not figure_texts(cell), f"figure shown as text, not as an image:\n{cell.source}"
    for cell in figure_cells:
        shown = images(cell)
        assert shown == 1, f"{shown} images (expected 1) from the cell:\n{cell.source}"


def test_notebook_missing_run_store_is_a_clear_error(tmp_path, monkeypatch):
    """Outside the repository the store lookup names what it looked for and how to fix it."""
    notebook = nbformat.read(REPO / "notebooks" / "demo_runs.ipynb", as_version=4)
    first = next(c for c in notebook.cells if c.cell_type == "code" and "find_run_store" in c.source)
    notebook.cells = [first]
    path = tmp_path / "probe.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(pytest.fail.Exception) as failed:
        execute(path, tmp_path, "Agg", monkeypatch)
    message = str(failed.value)
    assert "no artifacts/demo/runs in" in message and "FISHERLAB_RUNS" in message


def test_kernel_is_this_interpreter():
    """The ``python3`` kernel a fresh venv gets is the venv's interpreter, not another one."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    assert "python3" in KernelSpecManager().find_kernel_specs()
    manager = KernelManager(kernel_name="python3")
    command = manager.format_kernel_cmd()
    assert command[0] == sys.executable or Path(command[0]).resolve() == Path(sys.executable).resolve()
