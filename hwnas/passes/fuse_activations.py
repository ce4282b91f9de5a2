"""Activation fusion marking: Conv/Gemm + Relu/Clip/HardSwish run as one kernel."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.ir.annotations import FusedActivation, FusedInto
from hwnas.ir.graph import Graph, Node
from hwnas.passes.base import Pass, PassResult, register_pass

PRODUCERS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
ACTIVATIONS = ("Relu", "Clip", "HardSwish", "LeakyRelu", "HardSigmoid", "Sigmoid")


def fusion_of(node: Node) -> Node | None:
    """The activation that `node` can run fused with, or None."""
    if node.domain or node.op not in PRODUCERS or len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    uses = out.uses  # one use is one user
    if len(uses) != 1 or (node.graph and node.graph.is_output(out)):
        return None
    act = uses[0][0]
    return act if act.op in ACTIVATIONS and not act.domain and act.input(0) is out else None


@register_pass
@dataclass(frozen=True)
class FuseActivations(Pass):
    """Marks a Conv/Gemm/MatMul whose only reader is an element-wise activation (Relu,
    Clip, HardSwish, ...) with a `fused_activation` annotation, and the activation with
    `fused_into`, so cost models price the pair as one kernel. The graph's computation is
    untouched; stale marks (from nodes since removed) are cleared."""

    name = "fuse-activations"

    def run(self, graph: Graph) -> PassResult:
        wanted: dict[int, object] = {}
        for n in graph.nodes:
            act = fusion_of(n)
            if act is not None:
                wanted[id(n)] = FusedActivation(act.op, act.name)
                wanted[id(act)] = FusedInto(n.name)
        changed = False
        for n in graph.nodes:
            want = wanted.get(id(n))
            fa = want if isinstance(want, FusedActivation) else None
            fi = want if isinstance(want, FusedInto) else None
            if n.ann.fused_activation != fa or n.ann.fused_into != fi:
                n.ann.fused_activation, n.ann.fused_into = fa, fi
                changed = True
        return PassResult(graph, changed)
