"""Bind symbolic input dimensions (a dynamic batch 'N', an image's height and width, a sequence
length) to numbers."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.errors import PipelineError
from hwnas.ir.dims import Sizes, parse_dims
from hwnas.ir.graph import Graph
from hwnas.ir.registry import refresh_types
from hwnas.ir.types import Dim, TensorType
from hwnas.passes.base import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class BindDims(Pass):
    """Gives the symbolic dimensions of the graph's inputs sizes: those named in `dims`
    (`"N=1,H=240,W=320"`, or an input's whole shape: `"x=1x3x240x320"`) theirs, every other one
    (named or unknown) `value` (1 by default: one sample, as latency is usually quoted), and
    re-infers the types that follow, so that shapes, MACs and costs become numbers. Applies
    when an input has a non-numeric dimension; the model then accepts only that size. Exact for
    that size. While any input dim is symbolic, a name in `dims` that is neither a dim nor an
    input is an error (run again on its own output, the pass does nothing)."""

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


def bind(graph: Graph, sizes: Sizes, value: int | None = 1) -> list[str] | None:
    """In place: each symbolic dim of the graph's inputs named in `sizes` set to its size (an
    input named there takes its whole shape), any other to `value` (left as it is when None);
    the types that follow re-inferred. Returns the dims set to `value`, as 'input[dim]' (None
    when no input had a symbolic dim). While some input dim is symbolic, a name in `sizes` that
    is neither a symbolic dim nor an input, or a shape that does not fit its input, raises
    PipelineError."""
    check_dims(graph, sizes, only_if_symbolic=True)
    defaulted: list[str] = []
    changed = False
    for v in graph.inputs:
        if v.type is None or v.type.shape is None or v.type.is_static:
            continue
        dims = sized_shape(v.name, v.type.shape, sizes, value, defaulted)
        changed = changed or dims != v.type.shape
        v.type = TensorType(v.type.dtype, dims)
    if not changed:
        return None
    refresh_types(graph)
    return defaulted


def sized_shape(name: str, shape: tuple[Dim, ...], sizes: Sizes, value: int | None = 1,
                defaulted: list[str] | None = None) -> tuple[Dim, ...]:
    """Input `name`'s `shape` with its symbolic dims sized as `bind` sizes them: the whole shape
    where `sizes` names the input, a dim named there its size, any other dim `value` (kept when
    None; each such dim is added to `defaulted` as 'input[dim]')."""
    whole = sizes.get(name)
    dims: list[Dim] = []
    for i, d in enumerate(shape):
        size = sizes.get(d) if isinstance(d, str) else None
        if isinstance(d, int):
            dims.append(d)
        elif isinstance(whole, tuple):
            dims.append(whole[i])
        elif isinstance(size, int):
            dims.append(size)
        elif value is None:
            dims.append(d)
        else:
            dims.append(value)
            if defaulted is not None:
                defaulted.append(f"{name}[{d if d is not None else f'dim {i}'}]")
    return tuple(dims)


def check_dims(graph: Graph, sizes: Sizes, only_if_symbolic: bool = False) -> None:
    """PipelineError when a name in `sizes` is neither a symbolic dim of the graph's inputs (given
    a size) nor an input (given a shape of its rank that keeps its numeric dims); with
    `only_if_symbolic`, only while some input dim is symbolic."""
    symbolic = symbolic_inputs(graph)
    if only_if_symbolic and not symbolic:
        return
    have = ", ".join(symbolic) or "none, every input dim is a number"
    named = {d for v in graph.inputs if v.type is not None and v.type.shape is not None
             for d in v.type.shape if isinstance(d, str)}
    inputs = {v.name: v for v in graph.inputs}
    unknown = []
    for key, size in sizes.items():
        if isinstance(size, int):
            if key in named:
                continue
            if key in inputs:
                raise PipelineError(f"dims {key}={size}: '{key}' is an input; give its whole shape "
                                    f"(as {key}=1x3x224x224) or its dims by name ({have})")
            unknown.append(key)
            continue
        v = inputs.get(key)
        if v is None:
            unknown.append(key)
            continue
        shape = v.type.shape if v.type is not None else None
        if shape is None:
            raise PipelineError(f"dims {key}: input '{key}' has no known rank")
        if len(shape) != len(size) or any(isinstance(d, int) and d != s for d, s in zip(shape, size, strict=True)):
            shown = "[" + ", ".join(str(d) for d in shape) + "]"
            raise PipelineError(f"dims {key}={'x'.join(map(str, size))}: input '{key}' has shape {shown}")
    if unknown:
        unnamed = [v.name for v in graph.inputs if v.type is not None and v.type.shape is not None
                   and any(d is None for d in v.type.shape)]
        whole = (f"; a dim with no name is given with its input's whole shape, as {unnamed[0]}=1x3x224x224"
                 if unnamed else "")
        raise PipelineError(f"dims {', '.join(unknown)}: no input of '{graph.name}' has "
                            f"{'this symbolic dim' if len(unknown) == 1 else 'these symbolic dims'} "
                            f"(its inputs' symbolic dims: {have}){whole}")


def symbolic_inputs(graph: Graph) -> list[str]:
    """Inputs whose shape is not all numbers, as 'name[N, 3, 224, 224]' ('?' for a dim of no name)."""
    return [f"{v.name}[{', '.join('?' if d is None else str(d) for d in v.type.shape)}]" for v in graph.inputs
            if v.type is not None and v.type.shape is not None and not v.type.is_static]


def bound_copy(graph: Graph, value: int = 1, sizes: Sizes | None = None) -> Graph:
    """GRAPH itself when its inputs' shapes are all numbers, else a copy with the dims named in
    `sizes` bound to theirs and other symbolic dims to VALUE: what pricing and op counting read,
    leaving the caller's graph dynamic."""
    if not symbolic_inputs(graph):
        return graph
    copy = graph.copy()
    bind(copy, sizes or {}, value)
    return fold_bound(copy)


def fold_bound(graph: Graph) -> Graph:
    """GRAPH (in place) with what its now numeric input dims decide folded, to a fixpoint: each
    `Shape` or `Size` of a value of numeric shape, the shape arithmetic after it, and the types
    that follow (an Expand or Reshape whose target shape is computed from the input gets a known
    output shape, so it is priced). What pricing a graph bound on a copy needs; a graph bound
    before `canonicalize` gets the same from it."""
    from hwnas.passes.fold_constants import FoldConstants
    from hwnas.passes.pipeline import Fixpoint, PassRunner
    from hwnas.passes.refresh_shapes import RefreshShapes

    return PassRunner().run(Fixpoint((FoldConstants(), RefreshShapes())), graph).graph
