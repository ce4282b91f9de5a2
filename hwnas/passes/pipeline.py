"""Pipeline specs (`"canonicalize,prune{ratio=0.5},fixpoint(dce,fold-constants)"`), the
sequence and fixpoint combinators, and the runner that applies instruments."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass

from hwnas.errors import PipelineError
from hwnas.ir.graph import Graph
from hwnas.passes.base import CompositePass, Pass, PassResult, PassRunner, register_pass, registered_passes
from hwnas.passes.options import format_options


@dataclass(frozen=True)
class Pipeline(CompositePass):
    """Runs passes one after another."""

    name = "pipeline"
    passes: tuple[Pass, ...] = ()

    def children(self) -> tuple[Pass, ...]:
        return self.passes

    def run_nested(self, graph: Graph, runner: PassRunner) -> PassResult:
        changed = False
        for p in self.passes:
            result = runner.run(p, graph)
            graph, changed = result.graph, changed or result.changed
        return PassResult(graph, changed)

    def spec(self) -> str:
        return ",".join(p.spec() for p in self.passes)


@register_pass
@dataclass(frozen=True)
class Fixpoint(CompositePass):
    """Repeats its passes until a whole round changes nothing (or `max_iterations`)."""

    name = "fixpoint"
    passes: tuple[Pass, ...] = ()
    max_iterations: int = 20

    def children(self) -> tuple[Pass, ...]:
        return self.passes

    def run_nested(self, graph: Graph, runner: PassRunner) -> PassResult:
        changed = False
        for _ in range(self.max_iterations):
            result = Pipeline(self.passes).run_nested(graph, runner)
            graph = result.graph
            if not result.changed:
                break
            changed = True
        return PassResult(graph, changed)

    def spec(self) -> str:
        opts = {"max_iterations": self.max_iterations} if self.max_iterations != 20 else {}
        return f"fixpoint{format_options(opts)}(" + ",".join(p.spec() for p in self.passes) + ")"


# -- spec syntax -----------------------------------------------------------------------

_TOKEN = re.compile(r"\s*([A-Za-z0-9_.\-+]+|\"[^\"]*\"|[{}(),=])")


def parse_pipeline(spec: str) -> Pipeline:
    """Parse a spec into pass instances; errors name the pass or option that is wrong."""
    passes = registered_passes()
    tokens = _tokenize(spec)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise PipelineError(f"pipeline '{spec}': ends too early")
        pos += 1
        return tokens[pos - 1]

    def parse_list(closing: str | None) -> list[Pass]:
        items = [parse_one()]
        while peek() == ",":
            take()
            items.append(parse_one())
        if closing is not None and take() != closing:
            raise PipelineError(f"pipeline '{spec}': expected '{closing}'")
        return items

    def parse_one() -> Pass:
        name = take()
        if name not in passes:
            known = ", ".join(sorted(passes))
            raise PipelineError(f"unknown pass '{name}' in pipeline '{spec}' (known passes: {known})")
        opts: dict[str, str] = {}
        if peek() == "{":
            take()
            while peek() != "}":
                key = take()
                if take() != "=":
                    raise PipelineError(f"pass '{name}': option '{key}' needs '=value'")
                opts[key] = take()
                if peek() == ",":
                    take()
            take()
        children: list[Pass] = []
        if peek() == "(":
            take()
            children = parse_list(")")
        return _instantiate(passes[name], opts, children)

    if not tokens:
        raise PipelineError("empty pipeline")
    result = parse_list(None)
    if pos != len(tokens):
        raise PipelineError(f"pipeline '{spec}': unexpected '{tokens[pos]}'")
    return Pipeline(tuple(result))


def _tokenize(spec: str) -> list[str]:
    out, pos = [], 0
    spec = spec.strip()
    while pos < len(spec):
        m = _TOKEN.match(spec, pos)
        if not m:
            raise PipelineError(f"pipeline '{spec}': unexpected character '{spec[pos]}' at {pos + 1}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _instantiate(cls: type[Pass], raw: dict[str, str], children: list[Pass]) -> Pass:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, object] = {}
    if children:
        if "passes" not in fields:
            raise PipelineError(f"pass '{cls.name}' takes no nested passes")
        kwargs["passes"] = tuple(children)
    for key, text in raw.items():
        if key not in fields or key == "passes":
            options = ", ".join(k for k in fields if k != "passes") or "none"
            raise PipelineError(f"pass '{cls.name}' has no option '{key}' (options: {options})")
        kwargs[key] = _convert(cls.name, key, text, hints[key])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise PipelineError(f"pass '{cls.name}': {e}") from None


def _convert(pass_name: str, key: str, text: str, hint: object) -> object:
    text = text.strip('"')
    kinds = typing.get_args(hint) or (hint,)
    if typing.get_origin(hint) is typing.Literal:
        if text not in kinds:
            raise PipelineError(f"pass '{pass_name}': option '{key}' must be one of {', '.join(map(str, kinds))}")
        return text
    for kind in kinds:
        try:
            if kind is bool:
                if text.lower() in ("true", "1", "yes"):
                    return True
                if text.lower() in ("false", "0", "no"):
                    return False
                continue
            if kind is type(None):
                if text.lower() == "none":
                    return None
                continue
            if kind in (int, float, str):
                return kind(text)
        except ValueError:
            continue
    names = "/".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise PipelineError(f"pass '{pass_name}': option '{key}' must be {names}, not '{text}'")


def with_calibration(p: Pass, calib: str) -> tuple[Pass, bool]:
    """P with `calib` set on every pass in it that takes calibration data (quantize,
    quantize-mixed, prune-channels) and has none; and whether any had none (so a caller can
    say when the data it was given went unused)."""
    if any(f.name == "calib" for f in dataclasses.fields(p)):
        if getattr(p, "calib", None):
            return p, False
        return _replace(p, calib=calib), True
    children = getattr(p, "passes", None)
    if not isinstance(children, tuple):
        return p, False
    replaced = [with_calibration(c, calib) for c in children]
    return _replace(p, passes=tuple(c for c, _ in replaced)), any(u for _, u in replaced)


def _replace(p: Pass, **changes: object) -> Pass:
    # dataclasses.replace, with options that only some Pass subclasses have.
    return dataclasses.replace(p, **changes)
