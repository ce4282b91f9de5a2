"""The IR verifier: real models pass; each kind of malformed graph is reported with the
node that is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.types import DType, TensorType
from hwnas.ir.verifier import VerificationError, compatible, verify

F4 = TensorType(DType.FLOAT, (4,))


def chain() -> tuple[Graph, list[Node]]:
    """x -> first(Relu) -> second(Neg) -> third(Abs) -> output."""
    g = Graph("chain")
    x = g.add_input("x", F4)
    a = g.add_node("Relu", [x], name="first", output_names=["y1"], output_types=[F4])
    b = g.add_node("Neg", [a.outputs[0]], name="second", output_names=["y2"], output_types=[F4])
    c = g.add_node("Abs", [b.outputs[0]], name="third", output_names=["y3"], output_types=[F4])
    g.outputs = [c.outputs[0]]
    return g, [a, b, c]


def problems_of(graph: Graph) -> tuple[str, list[str]]:
    with pytest.raises(VerificationError) as info:
        verify(graph)
    err = info.value
    assert isinstance(err, HwnasError)
    assert "\n" not in str(err)
    return str(err), err.problems


def test_light_models_verify(light_model: str) -> None:
    verify(import_onnx(light_model))


def test_every_importable_node_test_model_verifies(imported_cases: tuple) -> None:
    bad = []
    for item in imported_cases:
        if item.graph is None:
            continue
        try:
            verify(item.graph)
        except VerificationError as e:
            bad.append(f"{item.case.name}: {e}")
    assert not bad, f"{len(bad)} imported node tests do not verify:\n" + "\n".join(bad)


def test_a_well_formed_chain_verifies() -> None:
    g, _ = chain()
    verify(g)


def test_cycle() -> None:
    g, (a, b, c) = chain()
    a.set_input(0, c.outputs[0])  # first reads third's output: first -> second -> third -> first
    message, problems = problems_of(g)
    assert "cycle" in message
    for name in ("first", "second", "third"):
        assert f"'{name}'" in message


def test_self_loop() -> None:
    g, (a, b, c) = chain()
    b.set_input(0, b.outputs[0])
    message, _ = problems_of(g)
    assert "cycle" in message and "'second'" in message


def test_undefined_input() -> None:
    g, (a, b, c) = chain()
    ghost = Value("ghost", F4)  # never added to the graph
    b.set_input(0, ghost)
    message, _ = problems_of(g)
    assert "node 'second' (Neg)" in message and "'ghost'" in message and "not defined" in message


def test_input_from_a_node_outside_the_graph() -> None:
    g, (a, b, c) = chain()
    other, (oa, _, _) = chain()
    c.set_input(0, oa.outputs[0])
    message, _ = problems_of(g)
    assert "node 'third' (Abs)" in message and "not defined" in message


def test_value_defined_twice_by_name() -> None:
    g, (a, b, c) = chain()
    b.outputs[0].name = "y1"  # two node outputs now share one name
    message, problems = problems_of(g)
    assert "'y1'" in message and "node 'first' (Relu)" in message and "node 'second' (Neg)" in message


def test_node_output_named_like_a_graph_input() -> None:
    g, (a, b, c) = chain()
    a.outputs[0].name = "x"
    message, _ = problems_of(g)
    assert "'x'" in message and "graph input" in message and "node 'first' (Relu)" in message


def test_same_node_listed_twice() -> None:
    g, (a, b, c) = chain()
    g.nodes.append(c)
    message, _ = problems_of(g)
    assert "defined twice" in message and "'third'" in message


def test_non_topological_order() -> None:
    g, (a, b, c) = chain()
    g.nodes = [a, c, b]
    message, _ = problems_of(g)
    assert "node 'third' (Abs)" in message and "'y2'" in message and "not topological" in message
    g.toposort()
    verify(g)


def test_node_not_belonging_to_the_graph() -> None:
    g, (a, b, c) = chain()
    c.graph = None
    message, _ = problems_of(g)
    assert "node 'third' (Abs)" in message and "does not belong" in message


def test_undefined_graph_output() -> None:
    g, _ = chain()
    g.outputs.append(Value("nowhere", F4))
    message, _ = problems_of(g)
    assert "'nowhere'" in message


def test_stale_use_list() -> None:
    g, (a, b, c) = chain()
    b._inputs[0] = g.inputs[0]  # bypasses set_input on purpose: the links are now wrong
    message, problems = problems_of(g)
    assert any("node 'second' (Neg)" in p and "use list" in p for p in problems)
    assert any("stale use by node 'second'" in p for p in problems)


def conv_graph(declared_channels: int) -> Graph:
    g = Graph("conv")
    x = g.add_input("x", TensorType(DType.FLOAT, (1, 3, 8, 8)))
    w = g.add_constant(np.zeros((8, 3, 3, 3), np.float32), "w")
    conv = g.add_node(
        "Conv",
        [x, w],
        attrs={"pads": Attr.ints([1, 1, 1, 1])},
        name="conv1",
        output_names=["y"],
        output_types=[TensorType(DType.FLOAT, (1, declared_channels, 8, 8))],
    )
    g.outputs = [conv.outputs[0]]
    return g


def test_declared_type_inconsistent_with_inference() -> None:
    verify(conv_graph(8))
    message, _ = problems_of(conv_graph(4))
    assert "node 'conv1' (Conv)" in message
    assert "f32[1,4,8,8]" in message and "f32[1,8,8,8]" in message


def test_conv_channels_that_do_not_match_the_weight() -> None:
    g = conv_graph(8)
    g.inputs[0].type = TensorType(DType.FLOAT, (1, 5, 8, 8))  # the weight wants 3 input channels
    message, _ = problems_of(g)
    assert "node 'conv1' (Conv)" in message and "5" in message and "3" in message


def test_declared_dtype_inconsistent_with_inference() -> None:
    g, (a, b, c) = chain()
    b.outputs[0].type = TensorType(DType.INT64, (4,))
    message, _ = problems_of(g)
    assert "node 'second' (Neg)" in message and "i64[4]" in message


def test_inference_error_names_the_node() -> None:
    g = Graph()
    x = g.add_input("x", TensorType(DType.FLOAT, (2, 3)))
    y = g.add_input("y", TensorType(DType.FLOAT, (4, 5)))
    n = g.add_node("MatMul", [x, y], name="mm", output_names=["z"])
    g.outputs = [n.outputs[0]]
    message, _ = problems_of(g)
    assert "'mm'" in message and "MatMul" in message


def test_type_checks_can_be_skipped() -> None:
    verify(conv_graph(4), check_types=False)


def test_several_problems_are_all_kept() -> None:
    g, (a, b, c) = chain()
    b.set_input(0, Value("ghost1", F4))
    c.set_input(0, Value("ghost2", F4))
    message, problems = problems_of(g)
    assert len(problems) == 2 and "(and 1 more)" in message
    assert "'second'" in problems[0] and "'third'" in problems[1]


@pytest.mark.parametrize(
    "a, b, ok",
    [
        ((DType.FLOAT, (1, 2)), (DType.FLOAT, (1, 2)), True),
        ((DType.FLOAT, (1, None)), (DType.FLOAT, (1, 2)), True),
        ((DType.FLOAT, (1, "N")), (DType.FLOAT, (1, 2)), True),
        ((DType.FLOAT, None), (DType.FLOAT, (1, 2)), True),
        ((DType.UNDEFINED, (1, 2)), (DType.INT8, (1, 2)), True),
        ((DType.FLOAT, (1, 3)), (DType.FLOAT, (1, 2)), False),
        ((DType.FLOAT, (1, 2, 1)), (DType.FLOAT, (1, 2)), False),
        ((DType.FLOAT16, (1, 2)), (DType.FLOAT, (1, 2)), False),
    ],
)
def test_compatible(a: tuple, b: tuple, ok: bool) -> None:
    assert compatible(TensorType(*a), TensorType(*b)) is ok
    assert compatible(TensorType(*b), TensorType(*a)) is ok
