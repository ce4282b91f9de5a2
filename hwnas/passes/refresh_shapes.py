"""Shape refresh: recompute every node's output types from its inputs."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.ir.graph import Graph
from hwnas.ir.registry import InferenceError, infer_types
from hwnas.ir.types import TensorType
from hwnas.passes.base import Pass, PassResult, register_pass


def refine(inferred: TensorType | None, old: TensorType | None) -> TensorType | None:
    """The inferred type, with dims it leaves unknown taken from the old type when the
    two agree otherwise (onnx's whole-model data propagation may know more)."""
    if inferred is None:
        return old
    if old is None or old.dtype != inferred.dtype:
        return inferred
    if inferred.shape is None:
        return old
    if old.shape is None or len(old.shape) != len(inferred.shape):
        return inferred
    dims = []
    for a, b in zip(inferred.shape, old.shape, strict=True):
        if isinstance(a, int):
            dims.append(a)
        else:
            dims.append(b if b is not None else a)
    return TensorType(inferred.dtype, tuple(dims))


@register_pass
@dataclass(frozen=True)
class RefreshShapes(Pass):
    """Re-infers every value's type in order, through the op registry, so types stay
    right after passes rewired or re-weighted the graph. Fails (naming the node) when an
    op's inputs no longer agree. Exact: only annotations of types change."""

    name = "refresh-shapes"

    def run(self, graph: Graph) -> PassResult:
        changed = False
        for node in graph.nodes:
            try:
                types = infer_types(node)
            except InferenceError:
                continue  # left as imported; the verifier reports real inconsistencies
            for v, t in zip(node.outputs, types, strict=False):
                new = refine(t, v.type)
                if new != v.type:
                    v.type = new
                    changed = True
        return PassResult(graph, changed)
