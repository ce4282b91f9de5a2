"""Dead-code elimination."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.ir.graph import Graph
from hwnas.passes.base import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Removes nodes that no graph output depends on, and constants that nothing reads.
    Applies to every graph; the outputs' values are unchanged (an exact pass)."""

    name = "dce"

    def run(self, graph: Graph) -> PassResult:
        live = set(map(id, graph.outputs))
        dead = []
        for n in reversed(graph.nodes):
            if live.isdisjoint(map(id, n.outputs)):
                dead.append(n)
            else:
                live.update(map(id, n.inputs))  # id(None) of an absent input too: no output has it
        graph.remove_nodes(dead)
        removed_constants = graph.remove_unused_constants()
        return PassResult(graph, bool(dead) or removed_constants > 0)
