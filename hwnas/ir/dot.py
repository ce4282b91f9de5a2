"""Graphviz DOT view of a graph (one box per node, one edge per value use)."""

from __future__ import annotations

import json
from collections.abc import Callable

from hwnas.ir.graph import Graph, Node


def to_dot(graph: Graph, node_attrs: Callable[[Node], dict[str, str]] | None = None) -> str:
    """The graph as Graphviz DOT text: inputs and outputs as ellipses, nodes as boxes, constants
    left out. `node_attrs` adds Graphviz attributes per node (a cost view's colours and tooltips);
    a `label` among them is added as more lines under the node's own label."""

    def q(s: str) -> str:
        return json.dumps(s)

    lines = [f"digraph {q(graph.name)} {{", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    for v in graph.inputs:
        lines.append(f"  {q('in:' + v.name)} [label={q(v.name + chr(10) + str(v.type))}, shape=ellipse];")
    for i, n in enumerate(graph.nodes):
        shape = ", ".join(str(o.type) for o in n.outputs if o.type is not None)
        fused = f" +{n.ann.fused_activation.op}" if n.ann.fused_activation else ""
        label = f"{n.qualified_op}{fused}" + chr(10) + n.name + chr(10) + shape
        extra = dict(node_attrs(n)) if node_attrs is not None else {}
        if "label" in extra:
            label += chr(10) + extra.pop("label")
        attrs = "".join(f", {k}={q(v)}" for k, v in extra.items())
        lines.append(f"  n{i} [label={q(label)}{attrs}];")
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    for i, n in enumerate(graph.nodes):
        for x in n.inputs:
            if x is None or x.const is not None:
                continue
            produced = x.producer is not None and id(x.producer) in index
            src = f"n{index[id(x.producer)]}" if produced else q("in:" + x.name)
            lines.append(f"  {src} -> n{i};")
    for v in graph.outputs:
        lines.append(f"  {q('out:' + v.name)} [label={q(v.name)}, shape=ellipse];")
        if v.producer is not None and id(v.producer) in index:
            lines.append(f"  n{index[id(v.producer)]} -> {q('out:' + v.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
