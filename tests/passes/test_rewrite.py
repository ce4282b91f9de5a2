"""The rewrite driver: rules applied greedily to a fixpoint, with the reasons they declined."""

from __future__ import annotations

from hwnas.ir.graph import Graph, Node
from hwnas.ir.text import parse_graph, print_graph
from hwnas.passes.eliminate_noops import bypass, bypass_reason
from hwnas.passes.rewrite import Rule, apply_rules


def _check_double_neg(n: Node) -> str | None:
    inner = n.input(0).producer if n.input(0) is not None else None
    if inner is None or inner.op != "Neg":
        return "input is not produced by a Neg"
    return bypass_reason(n, inner.input(0))


def _check_unread(n: Node) -> str | None:
    return "output is read" if n.outputs[0].uses or n.outputs[0] in n.graph.outputs else None


# -(-x) -> x
DOUBLE_NEG = Rule("Neg(Neg(x)) -> x", ("Neg",), _check_double_neg, lambda n: bypass(n, n.input(0).producer.input(0)))
# an unread Neg goes (a rule that can only fire on a node after its reader went)
UNREAD_NEG = Rule("unread Neg -> nothing", ("Neg",), _check_unread, lambda n: n.graph.remove_node(n))


def negs() -> Graph:
    return parse_graph("""
graph g {
  opset {"": 17}
  input %x: f32[2]
  %a: f32[2] = Neg(%x) @n1
  %b: f32[2] = Neg(%a) @n2
  %c: f32[2] = Neg(%b) @n3
  %d: f32[2] = com.example::Neg(%c) @custom
  %y: f32[2] = Relu(%d) @relu
  output %y
}
""")


def node_lines(graph: Graph) -> list[str]:
    return [ln for ln in print_graph(graph).splitlines() if ln.startswith("  %")]


def test_a_rewrite_is_seen_by_later_nodes_of_the_same_sweep() -> None:
    graph = negs()
    stats = apply_rules(graph, [DOUBLE_NEG])
    # n2 is bypassed (n3 now reads x); n3 then no longer reads a Neg; n1 is left unread.
    assert stats.changed and stats.applied == {"Neg(Neg(x)) -> x": 1}
    assert node_lines(graph) == [
        "  %a: f32[2] = Neg(%x) @n1",
        "  %c: f32[2] = Neg(%x) @n3",
        "  %d: f32[2] = com.example::Neg(%c) @custom",  # another domain: not matched
        "  %y: f32[2] = Relu(%d) @relu",
    ]
    assert stats.declined == {"Neg(Neg(x)) -> x": [("n1", "input is not produced by a Neg"),
                                                    ("n3", "input is not produced by a Neg")]}


def test_sweeps_repeat_until_nothing_fires() -> None:
    graph = negs()
    graph.outputs = [graph.value_by_name("a")]
    graph.remove_nodes([graph.node_by_name("relu"), graph.node_by_name("custom")])
    # Sweep 1 removes only n3 (n2 is still read when visited), sweep 2 n2; sweep 3 finds nothing.
    stats = apply_rules(graph, [UNREAD_NEG])
    assert stats.applied == {"unread Neg -> nothing": 2}
    assert node_lines(graph) == ["  %a: f32[2] = Neg(%x) @n1"]
    # The reasons are those of the last sweep, on the graph as it ended.
    assert stats.declined == {"unread Neg -> nothing": [("n1", "output is read")]}


def test_max_rounds_bounds_the_sweeps() -> None:
    graph = negs()
    graph.outputs = [graph.value_by_name("a")]
    graph.remove_nodes([graph.node_by_name("relu"), graph.node_by_name("custom")])
    stats = apply_rules(graph, [UNREAD_NEG], max_rounds=1)
    assert stats.applied == {"unread Neg -> nothing": 1}
    assert stats.declined == {"unread Neg -> nothing": [("n1", "output is read"), ("n2", "output is read")]}


def test_no_rule_matches() -> None:
    graph = negs()
    before = print_graph(graph)
    stats = apply_rules(graph, [Rule("never", ("Sigmoid",), lambda n: None, lambda n: None)])
    assert not stats.changed and stats.declined == {}
    assert print_graph(graph) == before
