"""Task registry: tasks by name, so new datasets plug in without touching the runner.

``get_task("testbed", path=...)`` returns a Task (see ``fisherlab.tasks.base``).
Built-in tasks are registered lazily as ``"module:attribute"`` strings, so
importing this package imports neither torch nor datasets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from fisherlab.errors import FisherlabError
from fisherlab.tasks.base import HEAD_KINDS, SPLITS, ClassificationTask, Task

TaskFactory = Callable[..., Task]

_REGISTRY: dict[str, TaskFactory | str] = {
    "mlqa": "fisherlab.tasks.mlqa:MLQATask",
    "pawsx": "fisherlab.tasks.pawsx:PAWSXTask",
    "testbed": "fisherlab.tasks.testbed:TestbedTask",
    "xcopa": "fisherlab.tasks.xcopa:XCOPATask",
    "xnli": "fisherlab.tasks.xnli:XNLITask",
    "xquad": "fisherlab.tasks.xquad:XQuADTask",
}


class UnknownTaskError(FisherlabError, ValueError):
    """No task is registered under the requested name."""


def register_task(name: str, factory: TaskFactory | str | None = None, *, replace: bool = False):
    """Register ``factory`` (a callable returning a Task, or ``"module:attr"``) under ``name``.

    Usable as a decorator: ``@register_task("xnli")`` above a class or function.
    Registering a taken name is an error unless ``replace=True``.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"register_task: name must be a non-empty string, got {name!r}")

    def _register(obj: TaskFactory | str) -> TaskFactory | str:
        if name in _REGISTRY and not replace and _REGISTRY[name] is not obj:
            raise ValueError(f"register_task: a task named {name!r} is already registered (use replace=True)")
        _REGISTRY[name] = obj
        return obj

    return _register if factory is None else _register(factory)


def available_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_REGISTRY)


def _resolve(entry: TaskFactory | str) -> TaskFactory:
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        return getattr(importlib.import_module(module), attr)
    return entry


def get_task(name: str, **options: Any) -> Task:
    """The task registered as ``name``, built with ``options``."""
    if name not in _REGISTRY:
        raise UnknownTaskError(f"task {name!r} is not registered; known tasks: {', '.join(available_tasks())}")
    return _resolve(_REGISTRY[name])(**options)


__all__ = ["HEAD_KINDS", "SPLITS", "ClassificationTask", "Task", "UnknownTaskError", "available_tasks",
           "get_task", "register_task"]
