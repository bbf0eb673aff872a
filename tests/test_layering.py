"""Dependencies flow one way: the layer table below (also in docs/architecture.md) is enforced.

Every ``import`` statement of every fisherlab module (module level and inside functions; not
``if TYPE_CHECKING:`` blocks, which never run) is read with ``ast``: a module may import modules of its own layer or lower ones only, and the
analysis side (layers ``errors`` .. ``report``) never imports the training stack. A
subprocess then imports every analysis-side module and checks that torch & co. were not loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fisherlab"

#: Layers, lowest first: (name, module prefixes, torch-free?). A module imports its own layer or lower.
LAYERS: list[tuple[str, tuple[str, ...], bool]] = [
    ("errors", ("fisherlab.errors", "fisherlab._lazy", "fisherlab._jsonl", "fisherlab.revision"), True),
    ("spec", ("fisherlab.spec", "fisherlab.presets"), True),
    ("store", ("fisherlab.runs",), True),
    ("analysis", ("fisherlab.analysis",), True),
    ("plots", ("fisherlab.plots",), True),
    ("report", ("fisherlab.report",), True),
    ("torch_utils", ("fisherlab.torch_utils",), False),
    ("model", ("fisherlab.blocks", "fisherlab.block_discovery", "fisherlab.tiny", "fisherlab.models",
               "fisherlab.tasks", "fisherlab.testbed", "fisherlab.fisher", "fisherlab.unfreezing", "fisherlab.regularisers"), False),
    ("hf", ("fisherlab.hf",), False),
    ("config", ("fisherlab.config", "fisherlab.config_resolve"), False),
    ("train", ("fisherlab.train",), False),
    ("sweep", ("fisherlab.sweep", "fisherlab.two_stage"), False),
    ("demo", ("fisherlab.demo",), False),
    ("cli", ("fisherlab.cli",), False),
]
#: The training stack the torch-free layers must never import.
HEAVY = ("torch", "transformers", "adapters", "accelerate", "datasets", "tokenizers", "peft")
#: Reviewed upward imports (lazy, inside a function, training side only), with the reason.
ALLOWED_UPWARD = {
    ("fisherlab.spec.strategies", "fisherlab.fisher.probe"):
        "Fisher.make_probe builds the tr(F) probe on demand; only called by the unfreezing callback",
}
#: Modules that belong to no layer: the package facade (version, lazy public names).
FACADE = "fisherlab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    for index, (_, prefixes, _) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Absolute module names imported anywhere in ``path`` (relative imports resolved), with line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and isinstance(node.test, (ast.Name, ast.Attribute))
               and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
               for child in node.body for n in ast.walk(child)}  # annotations only: never executed
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names
                      if _layer(f"{base}.{alias.name}") is not None and _layer(base) is None]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    orphans = [_module_name(p) for p in MODULES if _module_name(p) != FACADE and _layer(_module_name(p)) is None]
    assert not orphans, f"modules in no layer of LAYERS (add them to the table and docs/architecture.md): {orphans}"


def _violations(path: Path, module: str) -> list[str]:
    own = _layer(module)
    name, _, torch_free = LAYERS[own]
    problems = []
    for imported, line in _imports(path, module):
        top = imported.split(".")[0]
        if torch_free and top in HEAVY:
            problems.append(f"line {line}: imports {imported} but layer {name!r} is torch-free")
        target = _layer(imported)
        if target is not None and target > own and (module, imported) not in ALLOWED_UPWARD:
            problems.append(f"line {line}: imports {imported} (layer {LAYERS[target][0]!r}) from the lower "
                            f"layer {name!r}")
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_downwards_and_analysis_is_torch_free(path):
    module = _module_name(path)
    if module == FACADE:
        return
    problems = _violations(path, module)
    assert not problems, f"{module}:\n" + "\n".join(problems)


def test_layer_check_catches_torch_in_analysis_and_upward_imports(tmp_path):
    """The check itself: a (lazy) torch import in an analysis module and an upward import are reported."""
    fake = tmp_path / "probe.py"
    fake.write_text("from ..report import build\n\ndef f():\n    import torch.nn\n    return torch\n")
    problems = _violations(fake, "fisherlab.analysis.probe")
    assert any("imports torch.nn but layer 'analysis' is torch-free" in p for p in problems)
    assert any("imports fisherlab.report (layer 'report') from the lower layer 'analysis'" in p for p in problems)
    assert _violations(fake, "fisherlab.train") == []  # the training side may


def test_analysis_side_imports_without_the_training_stack():
    torch_free = [_module_name(p) for p in MODULES
                  if _layer(_module_name(p)) is not None and LAYERS[_layer(_module_name(p))][2]]
    code = ("import importlib, sys\n"
            f"for name in {torch_free!r}:\n    importlib.import_module(name)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"the analysis side loaded: {result.stdout.strip()}"
