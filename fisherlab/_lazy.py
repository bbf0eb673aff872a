"""Lazy package exports (PEP 562), torch-free: one implementation for every ``__init__``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` whose public ``name`` lives in module
    ``exports[name]`` (absolute, or relative to the package with a leading ``.``). A name is
    looked up in its module at every access (not cached in the package), so the package
    always agrees with the module (e.g. under ``monkeypatch.setattr(module, name, ...)``);
    ``namespace`` is the package's ``globals()``, for ``__dir__``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module, package), name)

    public = sorted(exports)

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__, public
