"""Structural equality of graphs: same names, types, ops, attributes, constants, order."""

from __future__ import annotations

from hwnas.ir.attributes import arrays_equal
from hwnas.ir.graph import Graph, Node


def _node_key(n: Node) -> tuple:
    return (
        n.name, n.op, n.domain,
        tuple(None if v is None else v.name for v in n.inputs),
        tuple((v.name, v.type) for v in n.outputs),
        dict(n.ann.items()),
    )


def graph_difference(a: Graph, b: Graph) -> str | None:
    """The first difference between two graphs, or None when they are equal."""
    if (a.name, a.opset, a.doc) != (b.name, b.opset, b.doc):
        return f"header differs: {(a.name, a.opset)} vs {(b.name, b.opset)}"
    if [(v.name, v.type) for v in a.inputs] != [(v.name, v.type) for v in b.inputs]:
        return "inputs differ"
    if [v.name for v in a.outputs] != [v.name for v in b.outputs]:
        return "outputs differ"
    if list(a.constants) != list(b.constants):
        return "constant names differ"
    for k, v in a.constants.items():
        w = b.constants[k]
        if v.const is None or w.const is None:
            if v.const is not w.const or v.type != w.type:
                return f"constant '{k}' differs"
        elif v.type != w.type or not arrays_equal(v.const, w.const):
            return f"constant '{k}' differs"
    if len(a.nodes) != len(b.nodes):
        return f"node counts differ: {len(a.nodes)} vs {len(b.nodes)}"
    for x, y in zip(a.nodes, b.nodes, strict=True):
        if _node_key(x) != _node_key(y) or x.attrs != y.attrs:
            return f"node '{x.name}' differs from '{y.name}'"
    return None


def graphs_equal(a: Graph, b: Graph) -> bool:
    """True when `graph_difference` finds none."""
    return graph_difference(a, b) is None
