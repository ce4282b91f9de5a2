"""Tasks register their loaders by name with a decorator; `load_task` builds one by name.

    @register_task("digits-cnn")
    def load(seed: int = 0, ...) -> Task: ...

A loader returns a `Task` whose `name` is the registered one; its keyword arguments (seed,
split, cache) are the task's options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hwnas.tasks.base import Task

Loader = Callable[..., Task]
L = TypeVar("L", bound=Loader)

_LOADERS: dict[str, Loader] = {}


def register_task(name: str) -> Callable[[L], L]:
    """Registers the decorated function as the loader of task `name` (a name taken twice is
    an error: the second would silently replace the first)."""

    def decorate(loader: L) -> L:
        if name in _LOADERS:
            raise ValueError(f"task '{name}' is already registered (by {_LOADERS[name].__module__})")
        _LOADERS[name] = loader
        return loader

    return decorate


def task_names() -> tuple[str, ...]:
    """Registered task names, sorted (registration order depends on import order)."""
    return tuple(sorted(_LOADERS))


def task_loader(name: str) -> Loader:
    """The loader registered as `name`."""
    if name not in _LOADERS:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(task_names())})")
    return _LOADERS[name]


def load_task(name: str, **options: Any) -> Task:
    """The task called `name`, built by its loader with `options` (seed, split, cache, ...)."""
    task = task_loader(name)(**options)
    if task.name != name:
        raise ValueError(f"the loader of task '{name}' returned a task named '{task.name}'")
    return task
