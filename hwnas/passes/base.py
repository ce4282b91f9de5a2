"""Passes: small frozen dataclasses with a kebab-case name, options as fields, and
`run(graph) -> PassResult`. `@register_pass` adds a class to the registry that pipeline
specs are parsed against; nothing else keeps a list of passes."""

from __future__ import annotations

import abc
import dataclasses
import importlib.util
import inspect
import sys
import textwrap
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from hwnas.errors import PipelineError
from hwnas.ir.graph import Graph
from hwnas.passes.options import format_options

if TYPE_CHECKING:
    from hwnas.passes.instruments import Instrument


@dataclass(frozen=True, slots=True)
class PassResult:
    """What a pass returns: the graph after it (usually the same object, changed in place)
    and whether it changed anything. `changed` must be honest: a second run of a pass on
    its own output reports False (`hwnas.passes.testing.fires` checks that)."""

    graph: Graph
    changed: bool


@dataclass(frozen=True)
class Pass(abc.ABC):
    """Base of every pass. Subclasses set `name` and implement `run`."""

    name: ClassVar[str] = ""
    tolerance: ClassVar[float] = 0.0
    """Largest absolute change in model outputs the pass may cause (0 for exact passes)."""

    @abc.abstractmethod
    def run(self, graph: Graph) -> PassResult: ...

    def options(self) -> dict[str, object]:
        """Options that differ from their defaults, in field order."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.default is dataclasses.MISSING or v != f.default:
                out[f.name] = v
        return out

    def spec(self) -> str:
        return self.name + format_options(self.options())


class CompositePass(Pass):
    """A pass made of passes; it runs them through a runner so instruments see each."""

    def children(self) -> tuple[Pass, ...]:
        return ()

    def run(self, graph: Graph) -> PassResult:
        return self.run_nested(graph, PassRunner())

    @abc.abstractmethod
    def run_nested(self, graph: Graph, runner: PassRunner) -> PassResult: ...


class PassRunner:
    """Runs passes with instruments attached; composite passes run children through it."""

    def __init__(self, instruments: Sequence[Instrument] = ()):
        self.instruments = list(instruments)
        self.depth = 0

    def run(self, p: Pass, graph: Graph) -> PassResult:
        for ins in self.instruments:
            ins.before_pass(p, graph, self.depth)
        start = time.perf_counter()
        self.depth += 1
        try:
            result = p.run_nested(graph, self) if isinstance(p, CompositePass) else p.run(graph)
        finally:
            self.depth -= 1
        elapsed = time.perf_counter() - start
        for ins in self.instruments:
            ins.after_pass(p, result, elapsed, self.depth)
        return result


PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make the pass available to pipeline specs by its `name`."""
    # The class's own parameters: a subclass not decorated itself inherits Pass's, and its
    # annotated options would silently not be fields.
    params = cls.__dict__.get("__dataclass_params__")
    if params is None or not params.frozen:
        raise TypeError(f"pass {cls.__name__} must be a frozen dataclass")
    if not cls.name or cls.name != cls.name.lower() or " " in cls.name:
        raise TypeError(f"pass {cls.__name__} needs a kebab-case `name`")
    if cls.name in PASSES and PASSES[cls.name] is not cls:
        raise TypeError(f"pass name '{cls.name}' is taken by {PASSES[cls.name].__qualname__}")
    PASSES[cls.name] = cls
    return cls


def registered_passes() -> dict[str, type[Pass]]:
    """Every pass a pipeline spec can name, by name: the built-in ones and any plugin's."""
    import hwnas.passes  # noqa: F401  (registers the built-in passes)

    return dict(PASSES)


def load_plugin(path: str | Path) -> None:
    """Import a user's pass module by path so its `@register_pass` classes register."""
    p = Path(path)
    if not p.is_file():
        raise PipelineError(f"{p}: plugin file not found")
    name = f"hwnas_plugin_{p.stem}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise PipelineError(f"{p}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    before = dict(PASSES)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        PASSES.clear()
        PASSES.update(before)  # a plugin that fails leaves none of its passes behind
        raise PipelineError(f"{p}: plugin failed to load: {type(e).__name__}: {e}") from None


def pass_options(cls: type[Pass]) -> list[tuple[str, str, object]]:
    """(name, type, default) of each option of a pass class, in field order; a Literal
    type lists its choices (`l1|l2|bn`), a required option has `dataclasses.MISSING`."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, str, object]] = []
    for f in dataclasses.fields(cls):
        if f.name == "passes":
            continue
        hint = hints.get(f.name, f.type)
        if typing.get_origin(hint) is typing.Literal:
            kind = "|".join(map(str, typing.get_args(hint)))
        else:
            kind = " | ".join(getattr(a, "__name__", str(a)) for a in (typing.get_args(hint) or (hint,)))
            kind = kind.replace("NoneType", "None")
        out.append((f.name, kind, f.default))
    return out


def describe_pass(cls: type[Pass], width: int = 100) -> str:
    """The pass as `hwnas passes` shows it: name, options (name: type = default) and the
    first paragraph of its docstring, wrapped to WIDTH."""
    opts = []
    for name, kind, default in pass_options(cls):
        shown = "" if default is dataclasses.MISSING else f" = {format_options({name: default})[len(name) + 2:-1]}"
        opts.append(f"{name}: {kind}{shown}")
    nested = any(f.name == "passes" for f in dataclasses.fields(cls))
    head = cls.name + ("{" + ", ".join(opts) + "}" if opts else "") + ("(PASSES)" if nested else "")
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
    text = textwrap.fill(" ".join(doc.split()), width=width, initial_indent="    ", subsequent_indent="    ")
    return head + ("\n" + text if text.strip() else "")
