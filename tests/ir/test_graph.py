"""Graph, Node and Value: use-def links stay right through every mutator."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.ir.graph import Graph, IRError, Node, Value
from hwnas.ir.types import DType, TensorType

F4 = TensorType(DType.FLOAT, (4,))


def assert_links(graph: Graph) -> None:
    """Every input edge is in its value's use list and every listed use is a real edge."""
    for n in graph.nodes:
        assert n.graph is graph
        for i, v in enumerate(n.inputs):
            if v is not None:
                assert sum(1 for u, k in v.uses if u is n and k == i) == 1, (n.name, i, v.name)
        for k, v in enumerate(n.outputs):
            assert v.producer is n and v.index == k
    for v in graph.values():
        for u, k in v.uses:
            assert u in graph.nodes and u.input(k) is v, (v.name, u.name, k)


def chain() -> tuple[Graph, Value, list[Node]]:
    """x -> a(Relu) -> ya -> b(Neg) -> yb -> c(Abs) -> yc (the output)."""
    g = Graph("chain")
    x = g.add_input("x", F4)
    a = g.add_node("Relu", [x], name="a", output_names=["ya"], output_types=[F4])
    b = g.add_node("Neg", [a.outputs[0]], name="b", output_names=["yb"], output_types=[F4])
    c = g.add_node("Abs", [b.outputs[0]], name="c", output_names=["yc"], output_types=[F4])
    g.outputs = [c.outputs[0]]
    return g, x, [a, b, c]


def names(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes]


def test_building_links_producers_and_users() -> None:
    g, x, (a, b, c) = chain()
    assert_links(g)
    assert x.users == [a] and x.uses == [(a, 0)]
    assert a.outputs[0].producer is a and a.outputs[0].users == [b]
    assert c.outputs[0].users == []
    assert [v.name for v in g.values()] == ["x", "ya", "yb", "yc"]
    assert names(g.nodes) == ["a", "b", "c"]


def test_uses_is_a_copy() -> None:
    g, x, (a, _, _) = chain()
    x.uses.clear()
    assert x.uses == [(a, 0)]


def test_same_value_read_twice_is_two_uses_one_user() -> None:
    g = Graph()
    x = g.add_input("x", F4)
    n = g.add_node("Add", [x, x], name="add")
    assert x.uses == [(n, 0), (n, 1)]
    assert x.users == [n]
    n.set_input(0, g.add_input("y", F4))
    assert x.uses == [(n, 1)]
    assert_links(g)


def test_set_input_moves_the_use() -> None:
    g, x, (a, b, c) = chain()
    c.set_input(0, a.outputs[0])
    assert b.outputs[0].uses == []
    assert a.outputs[0].uses == [(b, 0), (c, 0)]
    assert c.input(0) is a.outputs[0]
    assert_links(g)


def test_set_input_to_none_and_back() -> None:
    g, x, (a, b, c) = chain()
    b.set_input(0, None)
    assert b.inputs == (None,) and a.outputs[0].uses == []
    b.set_input(0, a.outputs[0])
    assert a.outputs[0].uses == [(b, 0)]
    assert_links(g)


def test_set_inputs_replaces_all_inputs() -> None:
    g = Graph()
    x, y, z = (g.add_input(n, F4) for n in "xyz")
    n = g.add_node("Sum", [x, y, x], name="sum")
    n.set_inputs([z, None, y, y])
    assert n.inputs == (z, None, y, y)
    assert x.uses == []
    assert y.uses == [(n, 2), (n, 3)]
    assert z.uses == [(n, 0)]
    n.set_inputs([x])
    assert n.inputs == (x,) and y.uses == [] and z.uses == [] and x.uses == [(n, 0)]
    assert_links(g)


def test_input_beyond_the_end_is_absent() -> None:
    g, x, (a, _, _) = chain()
    assert a.input(0) is x
    assert a.input(5) is None


def test_replace_all_uses_with() -> None:
    g = Graph()
    x, y = g.add_input("x", F4), g.add_input("y", F4)
    p = g.add_node("Relu", [x], name="p")
    q = g.add_node("Add", [x, p.outputs[0]], name="q")
    r = g.add_node("Mul", [x, x], name="r")
    g.outputs = [q.outputs[0], r.outputs[0]]
    x.replace_all_uses_with(y)
    assert x.uses == []
    assert p.inputs == (y,) and q.inputs == (y, p.outputs[0]) and r.inputs == (y, y)
    assert sorted((u.op, k) for u, k in y.uses) == [("Add", 0), ("Mul", 0), ("Mul", 1), ("Relu", 0)]
    assert_links(g)


def test_replace_all_uses_with_itself_changes_nothing() -> None:
    g, x, (a, _, _) = chain()
    x.replace_all_uses_with(x)
    assert x.uses == [(a, 0)]
    assert_links(g)


def test_replace_value_inside_the_graph() -> None:
    g, x, (a, b, c) = chain()
    assert g.replace_value(b.outputs[0], a.outputs[0]) is None
    assert c.input(0) is a.outputs[0]
    assert b.outputs[0].uses == []
    assert g.outputs == [c.outputs[0]] and c.outputs[0].name == "yc"
    assert_links(g)


def test_replace_value_of_a_graph_output_keeps_the_output_name() -> None:
    g, x, (a, b, c) = chain()
    old = c.outputs[0]
    assert g.replace_value(old, b.outputs[0]) is None
    assert g.outputs == [b.outputs[0]]
    assert b.outputs[0].name == "yc"  # the graph output keeps its name
    assert old.name != "yc"
    assert old.name in {v.name for v in g.values()}
    # Every value name stays unique, and the freed name 'yb' can be handed out again.
    all_names = [v.name for v in g.values()]
    assert len(all_names) == len(set(all_names))
    assert g.unique_name("yb") == "yb"
    # The now-dead node can go.
    g.remove_nodes([c])
    assert names(g.nodes) == ["a", "b"]
    assert_links(g)


def test_replace_value_of_a_graph_output_that_is_read_too() -> None:
    g, x, (a, b, c) = chain()
    g.outputs = [b.outputs[0], c.outputs[0]]
    old = b.outputs[0]
    assert g.replace_value(old, a.outputs[0]) is None
    assert g.outputs[0] is a.outputs[0] and a.outputs[0].name == "yb"
    assert c.input(0) is a.outputs[0]
    assert old.uses == []
    assert_links(g)


def test_replace_value_refuses_what_cannot_take_an_output_name() -> None:
    g, x, (a, b, c) = chain()
    old = c.outputs[0]
    k = g.add_constant(np.zeros(4, np.float32), "k")
    for new in (x, k):  # a graph input or a constant cannot be renamed into an output
        reason = g.replace_value(old, new)
        assert reason is not None and "'yc'" in reason
    g.outputs = [b.outputs[0], c.outputs[0]]
    reason = g.replace_value(c.outputs[0], b.outputs[0])  # already an output itself
    assert reason is not None
    # Nothing changed.
    assert [v.name for v in g.outputs] == ["yb", "yc"] and c.input(0) is b.outputs[0]
    assert_links(g)


def test_add_node_before_and_after() -> None:
    g, x, (a, b, c) = chain()
    first = g.add_node("Identity", [x], name="first", output_names=["y1"], before=a)
    mid = g.add_node("Identity", [a.outputs[0]], name="mid", output_names=["y2"], after=a)
    last = g.add_node("Identity", [c.outputs[0]], name="last", output_names=["y3"], after=c)
    assert names(g.nodes) == ["first", "a", "mid", "b", "c", "last"]
    assert x.users == [a, first]
    assert mid.graph is g and last.graph is g
    assert_links(g)


def test_add_node_not_in_graph_anchor_is_an_error() -> None:
    g, x, _ = chain()
    other, _, (oa, _, _) = chain()
    with pytest.raises(IRError, match="not in graph"):
        g.add_node("Relu", [x], before=oa)


def test_add_node_names_are_unique() -> None:
    g, x, (a, _, _) = chain()
    n = g.add_node("Relu", [x], name="a")
    assert n.name != "a" and n.outputs[0].name not in {"a", "b", "c", "x", "ya", "yb", "yc"}
    assert n.outputs[0].name != n.name  # values and nodes share one namespace
    two = g.add_node("Split", [x], n_outputs=2, name="s")
    assert [v.name for v in two.outputs] == ["s_out0", "s_out1"]


def test_a_value_has_one_producer() -> None:
    g, x, (a, _, _) = chain()
    with pytest.raises(IRError, match="already has a producer"):
        Node("Relu", [x], [a.outputs[0]], name="again")


def test_remove_nodes_detaches_inputs() -> None:
    g, x, (a, b, c) = chain()
    extra = g.add_node("Relu", [x], name="extra")
    g.remove_nodes([extra])
    assert x.uses == [(a, 0)]
    assert extra.graph is None and extra not in g.nodes
    assert_links(g)


def test_remove_a_set_that_reads_itself() -> None:
    g, x, (a, b, c) = chain()
    d = g.add_node("Relu", [x], name="d")
    e = g.add_node("Neg", [d.outputs[0]], name="e")
    g.remove_nodes([e, d])  # any order: the set is removed at once
    assert names(g.nodes) == ["a", "b", "c"]
    assert x.uses == [(a, 0)] and d.outputs[0].uses == []
    assert_links(g)


def test_remove_nodes_refuses_a_value_still_read() -> None:
    g, x, (a, b, c) = chain()
    with pytest.raises(IRError, match=r"cannot remove node 'b': 'yb' is read by 'c'"):
        g.remove_nodes([b])
    assert names(g.nodes) == ["a", "b", "c"]
    assert a.outputs[0].uses == [(b, 0)]  # nothing was detached
    assert_links(g)


def test_remove_nodes_refuses_a_graph_output() -> None:
    g, x, (a, b, c) = chain()
    with pytest.raises(IRError, match=r"cannot remove node 'c': 'yc' is a graph output"):
        g.remove_nodes([c])
    with pytest.raises(IRError, match="graph output"):
        g.remove_nodes([a, b, c])
    assert names(g.nodes) == ["a", "b", "c"]
    assert_links(g)


def test_remove_a_node_of_another_graph() -> None:
    g, x, (a, b, c) = chain()
    other, _, (oa, ob, oc) = chain()
    with pytest.raises(IRError, match="not in graph"):
        g.remove_nodes([oc])
    assert names(g.nodes) == ["a", "b", "c"] and oc.graph is other
    assert_links(g)


def test_drop_if_unused() -> None:
    g, x, (a, _, _) = chain()
    used = g.add_constant(np.ones(4, np.float32), "used")
    free = g.add_constant(np.ones(4, np.float32), "free")
    out = g.add_constant(np.ones(4, np.float32), "out")
    a.set_inputs([x, used])
    g.outputs.append(out)
    g.drop_if_unused(used, free, out, x, None)
    assert list(g.constants) == ["used", "out"]


def test_is_output_is_by_identity() -> None:
    g, x, (a, b, c) = chain()
    assert g.is_output(c.outputs[0])
    assert not g.is_output(b.outputs[0]) and not g.is_output(x)
    assert not g.is_output(Value("yc", F4))  # same name and type, another value


def test_remove_nothing() -> None:
    g, _, _ = chain()
    g.remove_nodes([])
    assert len(g.nodes) == 3


def test_remove_unused_constants() -> None:
    g, x, (a, _, _) = chain()
    used = g.add_constant(np.ones(4, np.float32), "used")
    g.add_constant(np.ones(4, np.float32), "unused")
    out = g.add_constant(np.ones(4, np.float32), "as_output")
    a.set_inputs([x, used])
    g.outputs.append(out)
    assert g.remove_unused_constants() == 1
    assert list(g.constants) == ["used", "as_output"]


def test_toposort_restores_order() -> None:
    g, x, (a, b, c) = chain()
    side = g.add_node("Relu", [x], name="side", output_names=["ys"])  # independent of the chain
    g.nodes = [c, side, b, a]
    g.toposort()
    assert names(g.nodes) == ["side", "a", "b", "c"]
    assert_links(g)


def test_toposort_keeps_a_valid_order() -> None:
    g = Graph()
    x = g.add_input("x", F4)
    for name in ("p", "q", "r", "s"):
        g.add_node("Relu", [x], name=name)
    before = names(g.nodes)
    g.toposort()
    assert names(g.nodes) == before


def test_toposort_names_the_nodes_of_a_cycle() -> None:
    g, x, (a, b, c) = chain()
    a.set_input(0, c.outputs[0])  # a -> b -> c -> a
    with pytest.raises(IRError, match="cycle") as info:
        g.toposort()
    message = str(info.value)
    for n in ("a", "b", "c"):
        assert n in message
    assert names(g.nodes) == ["a", "b", "c"]  # left as it was


def test_nx_has_one_edge_per_use() -> None:
    g = Graph()
    x = g.add_input("x", F4)
    k = g.add_constant(np.ones(4, np.float32), "k")
    p = g.add_node("Relu", [x], name="p", output_names=["yp"])
    q = g.add_node("Add", [p.outputs[0], p.outputs[0]], name="q", output_names=["yq"])
    r = g.add_node("Mul", [q.outputs[0], k], name="r", output_names=["yr"])
    g.outputs = [r.outputs[0]]
    view = g.nx()
    assert list(view.nodes) == [p, q, r]
    edges = sorted((u.name, v.name, d["value"], d["index"]) for u, v, d in view.edges(data=True))
    # Graph inputs and constants have no producer node, so no edge; a value read twice is two edges.
    assert edges == [("p", "q", "yp", 0), ("p", "q", "yp", 1), ("q", "r", "yq", 0)]
    assert view.number_of_edges(p, q) == 2


def test_nx_ignores_producers_outside_the_graph() -> None:
    g, x, (a, b, c) = chain()
    other, _, (oa, _, _) = chain()
    b.set_input(0, oa.outputs[0])
    edges = {(u.name, v.name) for u, v in g.nx().edges()}
    assert edges == {("b", "c")}


def test_value_and_node_lookup() -> None:
    g, x, (a, b, c) = chain()
    assert g.node_by_name("b") is b
    assert g.value_by_name("x") is x and g.value_by_name("yc") is c.outputs[0]
    with pytest.raises(KeyError):
        g.node_by_name("nope")
    with pytest.raises(KeyError):
        g.value_by_name("nope")


def test_constant_value_types_itself() -> None:
    g = Graph()
    k = g.add_constant(np.zeros((2, 3), np.int8), "k")
    assert k.is_constant and k.type == TensorType(DType.INT8, (2, 3))
    assert TensorType(DType.INT8, (2, 3)).nbytes() == 6
    assert TensorType(DType.INT4, (3,)).nbytes() == 2
    assert TensorType(DType.FLOAT, (2, "N")).numel() is None


def test_copy_is_equal_and_independent() -> None:
    import copy

    from hwnas.ir.annotations import QuantSpec
    from hwnas.ir.equality import graph_difference
    from hwnas.ir.text import print_graph
    from hwnas.ir.verifier import verify
    from tests.backends.graphs import Builder

    b = Builder((1, 3, 8, 8))
    y = b.op("Relu", b.conv(b.x, 8, name="c1"))
    for i in range(1500):  # deeper than Python's recursion limit allows deepcopy to walk
        y = b.op("Relu", y, name=f"r{i}")
    b.g.outputs.append(y)
    b.g.node_by_name("c1").ann.quant = QuantSpec(w_bits=4, a_bits=8)
    g = copy.deepcopy(b.g)
    verify(g)
    assert graph_difference(g, b.g) is None and print_graph(g) == print_graph(b.g)
    assert g.node_by_name("c1").ann.quant == QuantSpec(w_bits=4, a_bits=8)
    w = g.node_by_name("c1").input(1)
    assert w is not b.g.node_by_name("c1").input(1) and w.producer is None
    w.const[...] = 0
    assert np.abs(b.g.node_by_name("c1").input(1).const).sum() > 0
    g.add_node("Relu", [g.outputs[0]], name="extra")
    assert len(b.g.nodes) == len(g.nodes) - 1 and "extra" not in {n.name for n in b.g.nodes}
    assert g.unique_name("r0") != "r0"
