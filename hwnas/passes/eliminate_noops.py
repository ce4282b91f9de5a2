"""No-op elimination: ops that return their input unchanged are bypassed."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import const_value
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.rewrite import Rule, apply_rules


def bypass_reason(node: Node, x: Value | None) -> str | None:
    """Why `node`'s output cannot simply be replaced by `x`, or None."""
    if x is None:
        return "input is absent"
    graph = node.graph
    out = node.outputs[0]
    if graph is not None and graph.is_output(out):
        if x.producer is None or graph.is_output(x):
            return "output is a graph output that its input cannot stand in for"
    if any(o.uses or (graph is not None and graph.is_output(o)) for o in node.outputs[1:]):
        return "a secondary output is read"
    return None


def bypass(node: Node, x: Value) -> None:
    """Replace `node`'s first output by `x` everywhere (a graph output keeps its name) and
    remove the node; `bypass_reason` must have returned None."""
    graph = node.graph
    assert graph is not None
    reason = graph.replace_value(node.outputs[0], x)
    assert reason is None, reason
    graph.remove_node(node)


def _bypass_input(n: Node) -> None:
    bypass(n, n.operand(0))


def _check_identity(n: Node) -> str | None:
    return bypass_reason(n, n.input(0))


def _check_dropout(n: Node) -> str | None:
    if n.input(2) is not None:
        mode = const_value(n.input(2))
        if mode is None:
            return "training_mode is not a constant"
        if bool(mode):
            return "training_mode is on"
    return bypass_reason(n, n.input(0))


def _check_reshape(n: Node) -> str | None:
    x, y = n.input(0), n.outputs[0]
    if x is None or x.type is None or y.type is None or not x.type.is_static or not y.type.is_static:
        return "shapes are not static"
    if x.type.shape != y.type.shape:
        return f"shape changes from {x.type} to {y.type}"
    return bypass_reason(n, x)


def _perm(n: Node) -> tuple[int, ...] | None:
    if "perm" in n.attrs:
        return tuple(n.attr_ints("perm"))
    x = n.input(0)
    if x is None or x.type is None or x.type.rank is None:
        return None
    return tuple(reversed(range(x.type.rank)))


def _check_transpose_pair(n: Node) -> str | None:
    x = n.input(0)
    inner = x.producer if x is not None else None
    outer_perm = _perm(n)
    if outer_perm is not None and outer_perm == tuple(range(len(outer_perm))):
        return bypass_reason(n, x)
    if inner is None or inner.op != "Transpose" or inner.domain:
        return "input is not produced by a Transpose"
    inner_perm = _perm(inner)
    if inner_perm is None or outer_perm is None:
        return "a permutation is unknown"
    composed = tuple(inner_perm[p] for p in outer_perm)
    if composed != tuple(range(len(composed))):
        return f"permutations {inner_perm} and {outer_perm} do not cancel"
    return bypass_reason(n, inner.input(0))


def _bypass_transpose(n: Node) -> None:
    perm = _perm(n)
    if perm is not None and perm == tuple(range(len(perm))):
        bypass(n, n.operand(0))
    else:
        inner = n.operand(0).producer
        assert inner is not None  # _check_transpose_pair found the inner Transpose
        bypass(n, inner.operand(0))
        # The inner Transpose is left for dce when nothing else reads it.


def _check_cast(n: Node) -> str | None:
    x = n.input(0)
    if x is None or x.type is None:
        return "input type unknown"
    if "to" not in n.attrs:
        return "has no 'to' attribute"
    if n.attr_int("to", 0) != int(x.type.dtype):
        return "cast changes the element type"
    return bypass_reason(n, x)


RULES = (
    Rule("Identity(x) -> x", ("Identity",), _check_identity, _bypass_input),
    Rule("Dropout(x) -> x at inference", ("Dropout",), _check_dropout, _bypass_input),
    Rule("Reshape(x) -> x when the shape stays", ("Reshape",), _check_reshape, _bypass_input),
    Rule("Transpose(Transpose(x)) -> x when the permutations cancel", ("Transpose",),
         _check_transpose_pair, _bypass_transpose),
    Rule("Cast(x) -> x when the type stays", ("Cast",), _check_cast, _bypass_input),
)


@register_pass
@dataclass(frozen=True)
class EliminateNoops(Pass):
    """Bypasses Identity, inference-mode Dropout, Reshape to the same static shape, Cast to
    the same type, identity Transposes and Transpose pairs whose permutations cancel. A graph
    output keeps its name. Exact."""

    name = "eliminate-noops"

    def run(self, graph: Graph) -> PassResult:
        stats = apply_rules(graph, RULES)
        return PassResult(graph, stats.changed)
