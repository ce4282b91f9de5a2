"""Bind symbolic input dimensions (a dynamic batch 'N', an image's height and width, a sequence
length) to numbers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hwnas.errors import PipelineError
from hwnas.ir.dims import parse_dims
from hwnas.ir.graph import Graph
from hwnas.ir.registry import refresh_types
from hwnas.ir.types import TensorType
from hwnas.passes.base import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class BindDims(Pass):
    """Gives the symbolic dimensions of the graph's inputs sizes: those named in `dims`
    (`"N=1,H=240,W=320"`) theirs, every other one (named or unknown) `value` (1 by default:
    one sample, as latency is usually quoted), and re-infers the types that follow, so that
    shapes, MACs and costs become numbers. Applies when an input has a non-numeric dimension;
    the model then accepts only that size. Exact for that size. A name in `dims` that no input
    has is an error while any input dim is symbolic (run again on its own output, it does nothing)."""

    name = "bind-dims"
    value: int = 1
    dims: str = ""

    def __post_init__(self) -> None:
        if self.value < 1:
            raise ValueError(f"value must be at least 1, not {self.value}")
        parse_dims(self.dims)  # a malformed spec fails when the pipeline is parsed

    def run(self, graph: Graph) -> PassResult:
        defaulted = bind(graph, parse_dims(self.dims), self.value)
        return PassResult(graph, defaulted is not None)


def bind(graph: Graph, sizes: Mapping[str, int], value: int | None = 1) -> list[str] | None:
    """In place: each symbolic dim of the graph's inputs named in `sizes` set to its size, any
    other to `value` (left as it is when None); the types that follow re-inferred. Returns the dims set to `value`, as
    'input[dim]' (None when no input had a symbolic dim). While some input dim is symbolic, a
    name in `sizes` that no input has raises PipelineError naming the inputs' symbolic dims."""
    check_dims(graph, sizes, only_if_symbolic=True)
    defaulted: list[str] = []
    changed = False
    for v in graph.inputs:
        if v.type is None or v.type.shape is None or v.type.is_static:
            continue
        dims = []
        for i, d in enumerate(v.type.shape):
            if isinstance(d, int):
                dims.append(d)
            elif isinstance(d, str) and d in sizes:
                dims.append(sizes[d])
            elif value is None:
                dims.append(d)
            else:
                dims.append(value)
                defaulted.append(f"{v.name}[{d if d is not None else f'dim {i}'}]")
        changed = changed or tuple(dims) != v.type.shape
        v.type = TensorType(v.type.dtype, tuple(dims))
    if not changed:
        return None
    refresh_types(graph)
    return defaulted


def check_dims(graph: Graph, sizes: Mapping[str, int], only_if_symbolic: bool = False) -> None:
    """PipelineError when a name in `sizes` is not a symbolic dim of the graph's inputs (with
    `only_if_symbolic`, only while some input dim is symbolic)."""
    symbolic = symbolic_inputs(graph)
    if only_if_symbolic and not symbolic:
        return
    named = {d for v in graph.inputs if v.type is not None and v.type.shape is not None
             for d in v.type.shape if isinstance(d, str)}
    unknown = [k for k in sizes if k not in named]
    if unknown:
        have = ", ".join(symbolic) or "none, every input dim is a number"
        raise PipelineError(f"dims {', '.join(unknown)}: no input of '{graph.name}' has "
                            f"{'this symbolic dim' if len(unknown) == 1 else 'these symbolic dims'} "
                            f"(its inputs' symbolic dims: {have})")


def symbolic_inputs(graph: Graph) -> list[str]:
    """Inputs whose shape is not all numbers, as 'name[N,3,224,224]'."""
    return [f"{v.name}{list(v.type.shape)}".replace("'", "") for v in graph.inputs
            if v.type is not None and v.type.shape is not None and not v.type.is_static]


def bound_copy(graph: Graph, value: int = 1, sizes: Mapping[str, int] | None = None) -> Graph:
    """GRAPH itself when its inputs' shapes are all numbers and no `sizes` are given, else a
    copy with the dims named in `sizes` bound to theirs and other symbolic dims to VALUE: what
    pricing and op counting read, leaving the caller's graph dynamic."""
    if not symbolic_inputs(graph) and not sizes:
        return graph
    copy = graph.copy()
    bind(copy, sizes or {}, value)
    return copy
