"""What the subcommands share: the consoles, model loading with a spinner, output checks, and
choices read from a registry only when a command line uses them.

Nothing here imports a numerical library at module level (see `hwnas.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from hwnas.errors import OutputError

if TYPE_CHECKING:
    from hwnas.ir.dims import Sizes
    from hwnas.ir.graph import Graph

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)


def say(text: str) -> None:
    """One plain line on stderr (no markup, no highlighting, not wrapped: a warning stays one line)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def status(text: str) -> Iterator[None]:
    """A spinner on stderr for steps that can take seconds (silent when not a terminal)."""
    with console.status(text, spinner="dots"):
        yield


def load(path: Path, dims: Sizes | None = None) -> Graph:
    """The model at PATH; DIMS (`--dims`, {} when none is given: dims are then 1) choose the
    branches of ONNX `If` nodes that input dims decide (None: a command without `--dims`,
    which refuses such a model)."""
    from hwnas.frontends import load_graph

    with status(f"loading {path}"):
        return load_graph(path, dims)


def add_dims(parser: argparse.ArgumentParser, what: str) -> None:
    """`--dims NAME=SIZE,...`: sizes for the model's symbolic input dims, parsed (and a wrong
    one refused) before anything is loaded."""
    parser.add_argument("--dims", type=_dims, default={}, metavar="NAME=SIZE,...",
                        help=f"sizes of the model's symbolic input dims by name (N=1,H=240,W=320) or an "
                             f"input's whole shape (x=1x3x240x320) ({what}; dims not given are 1, and a note "
                             f"says which)")


def _dims(text: str) -> Sizes:
    from hwnas.ir.dims import parse_dims

    try:
        return parse_dims(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def bind_named(graph: Graph, dims: Sizes) -> Graph:
    """GRAPH (in place) with the symbolic input dims named in DIMS set to their sizes (an input
    named there takes its whole shape), the others left symbolic; a name that is neither is an
    error naming the ones there are."""
    if dims:
        from hwnas.passes.bind_dims import bind, check_dims

        check_dims(graph, dims)
        bind(graph, dims, value=None)
    return graph


def check_writable(path: Path) -> None:
    """Fail before any work when the output cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: cannot write (it is a directory)")
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot write (folder '{parent}' does not exist)")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: cannot write (folder '{parent}' is not writable)")


class LazyChoices(Collection[str]):
    """An argparse `choices` whose names come from `names()` when argparse first checks a value
    or prints the list (`%(choices)s` in a help text), not when the parser is built: the
    registries behind them import numpy and more, and `hwnas --help` should not wait for them."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        self._names = names
        self._cache: tuple[str, ...] | None = None

    def _get(self) -> tuple[str, ...]:
        if self._cache is None:
            self._cache = tuple(self._names())
        return self._cache

    def __contains__(self, name: object) -> bool:
        return name in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def task_names() -> tuple[str, ...]:
    """The registered tasks (importing the task registry, which loads numpy)."""
    from hwnas.tasks import task_names as registered

    return registered()
