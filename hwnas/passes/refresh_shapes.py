"""Shape refresh: recompute every node's output types from its inputs."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.ir.graph import Graph
from hwnas.ir.registry import refresh_types
from hwnas.passes.base import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class RefreshShapes(Pass):
    """Re-infers every value's type in order, through the op registry, so types stay
    right after passes rewired or re-weighted the graph. Fails (naming the node) when an
    op's inputs no longer agree. Exact: only annotations of types change."""

    name = "refresh-shapes"

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, refresh_types(graph))
