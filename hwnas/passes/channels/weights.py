"""The weights channel pruning edits: finding them, and making each a constant of its own."""

from __future__ import annotations

import numpy as np

from hwnas.ir.graph import Graph, Node
from hwnas.ir.registry import Channels, refresh_types, traits

LAYERS = ("Conv", "Gemm", "MatMul")
"""The layers whose filters pruning removes (each has a rule in `rules`): those with a float
constant weight in input 1. (The registry's `has_weights` is wider: integer and transposed
convolutions have weights too, but no rule slices them.)"""


def weight_nodes(graph: Graph) -> list[Node]:
    """Conv, Gemm and MatMul nodes whose weight (input 1) is a float constant."""
    out = []
    for n in graph.nodes:
        w = n.input(1)
        if not n.domain and n.op in LAYERS and w is not None and w.const is not None \
                and w.const.dtype.kind == "f" and w.const.size > 1:
            out.append(n)
    return out


def weight_of(node: Node) -> np.ndarray:
    """The constant weight (input 1) of a node `weight_nodes` returned."""
    w = node.operand(1).const
    if w is None:
        raise ValueError(f"node '{node.name}' ({node.op}): weight is not a constant")
    return w


def set_const(graph: Graph, node: Node, i: int, array: np.ndarray, suffix: str) -> None:
    """Makes input `i` of `node` a new constant holding `array`, dropping the old one if unused."""
    old = node.input(i)
    node.set_input(i, graph.add_constant(np.ascontiguousarray(array), f"{node.name}_{suffix}"))
    graph.drop_if_unused(old)


def _sliced_inputs(node: Node) -> bool:
    """Whether pruning may slice the node's constant inputs: a layer's weights, per-channel
    parameters, a constant operand of a broadcasting op."""
    t = traits(node)
    return node.op in LAYERS or bool(t.channel_params) or t.channels is Channels.BROADCAST


def private_weights(graph: Graph) -> bool:
    """Makes every weight and per-channel parameter a constant of its own node: weights built
    at run time (ConstantOfShape, Identity of a shared tensor, as exporters write) are folded,
    and a constant read by several nodes is copied for each; types are re-inferred. Exact;
    the channel analysis needs it (a shared constant cannot be sliced for one reader).
    Returns whether the graph changed."""
    from hwnas.passes.fold_constants import FoldConstants

    changed = FoldConstants(max_elements=2**62).run(graph).changed
    changed = refresh_types(graph) or changed  # shapes computed at run time (pads, say) may be known now
    for n in graph.nodes:
        if n.domain or not _sliced_inputs(n):
            continue
        for i, v in enumerate(n.inputs):
            if v is not None and v.const is not None and v.const.size > 1 and len(v.uses) > 1:
                n.set_input(i, graph.add_constant(v.const.copy(), v.name))
                changed = True
    return changed
