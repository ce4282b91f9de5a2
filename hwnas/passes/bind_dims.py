"""Bind symbolic input dimensions (a dynamic batch 'N', a sequence length) to a number."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.ir.graph import Graph
from hwnas.ir.registry import refresh_types
from hwnas.ir.types import TensorType
from hwnas.passes.base import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class BindDims(Pass):
    """Gives every symbolic or unknown dimension of the graph's inputs the size `value`
    (1 by default: one sample, as latency is usually quoted) and re-infers the types that
    follow, so that shapes, MACs and costs become numbers. Applies when an input has a
    non-numeric dimension; the model then accepts only that size. Exact for that size."""

    name = "bind-dims"
    value: int = 1

    def __post_init__(self) -> None:
        if self.value < 1:
            raise ValueError(f"value must be at least 1, not {self.value}")

    def run(self, graph: Graph) -> PassResult:
        changed = False
        for v in graph.inputs:
            if v.type is None or v.type.shape is None or v.type.is_static:
                continue
            dims = tuple(d if isinstance(d, int) else self.value for d in v.type.shape)
            v.type = TensorType(v.type.dtype, dims)
            changed = True
        if changed:
            refresh_types(graph)
        return PassResult(graph, changed)


def symbolic_inputs(graph: Graph) -> list[str]:
    """Inputs whose shape is not all numbers, as 'name[N,3,224,224]'."""
    return [f"{v.name}{list(v.type.shape)}".replace("'", "") for v in graph.inputs
            if v.type is not None and v.type.shape is not None and not v.type.is_static]


def bound_copy(graph: Graph, value: int = 1) -> Graph:
    """GRAPH itself when its inputs' shapes are all numbers, else a copy with symbolic dims
    bound to VALUE: what pricing and op counting read, leaving the caller's graph dynamic."""
    if not symbolic_inputs(graph):
        return graph
    return BindDims(value).run(graph.copy()).graph
