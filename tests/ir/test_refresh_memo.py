"""refresh_types skips nodes whose inference reads nothing new since the last refresh: every
edit that inference reads must still reach the types, and an unchanged graph keeps them."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph
from hwnas.ir.registry import refresh_types
from hwnas.ir.types import DType, TensorType


def conv_reshape() -> Graph:
    """x -> Conv(3x3) -> Relu -> Reshape(to `shape`, a constant) and Shape(x) -> Gather -> Reshape."""
    w = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    idx = numpy_helper.from_array(np.array([0, 1], np.int64), "idx")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["y"], name="flat"),
             helper.make_node("Shape", ["x"], ["s"], name="shape_of"),
             helper.make_node("Gather", ["s", "idx"], ["nc"], name="gather"),
             helper.make_node("Concat", ["nc", "shape"], ["nc1"], name="concat", axis=0),
             helper.make_node("Reshape", ["r", "nc1"], ["z"], name="by_shape")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")],
                          initializer=[w, shape, idx])
    return import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def types(g: Graph) -> dict[str, str]:
    return {v.name: str(v.type) for n in g.nodes for v in n.outputs}


def test_unchanged_graph_keeps_its_types() -> None:
    g = conv_reshape()
    refresh_types(g)
    before = {v.name: v.type for n in g.nodes for v in n.outputs}
    assert not refresh_types(g)
    assert all(v.type is before[v.name] for n in g.nodes for v in n.outputs)
    assert types(g)["y"] == "f32[1,144]"


def test_attribute_edit_reaches_the_types() -> None:
    g = conv_reshape()
    refresh_types(g)
    g.node_by_name("conv").attrs["strides"] = Attr.ints([2, 2])
    assert refresh_types(g)
    assert types(g)["c"] == "f32[1,4,3,3]" and types(g)["y"] == "f32[1,36]"


def test_input_type_and_constant_edits_reach_the_types() -> None:
    g = conv_reshape()
    refresh_types(g)
    g.inputs[0].type = TensorType(DType.FLOAT, (1, 2, 10, 10))
    assert refresh_types(g)
    assert types(g)["r"] == "f32[1,4,8,8]" and types(g)["y"] == "f32[1,256]"
    # Shape(x) -> Gather -> Concat read the input type further back: [1, 2, 1, -1]
    assert types(g)["z"] == "f32[1,2,1,128]"
    flat = g.node_by_name("flat")
    flat.set_input(1, g.add_constant(np.array([4, -1], np.int64), "shape4"))
    assert refresh_types(g)
    assert types(g)["y"] == "f32[4,64]"


def test_a_type_set_by_hand_is_refreshed() -> None:
    g = conv_reshape()
    refresh_types(g)
    g.node_by_name("relu").outputs[0].type = None
    assert refresh_types(g)
    assert types(g)["r"] == "f32[1,4,6,6]"


def test_a_shape_read_further_back_is_refreshed() -> None:
    # Reshape(t, Shape(x)): neither of Reshape's inputs changes type when x does.
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape_of"),
             helper.make_node("Reshape", ["t", "s"], ["z"], name="reshape")]
    vi = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
          helper.make_tensor_value_info("t", TensorProto.FLOAT, [24])]
    g = import_onnx(helper.make_model(helper.make_graph(nodes, "g", vi, [helper.make_tensor_value_info(
        "z", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)]))
    refresh_types(g)
    g.inputs[0].type = TensorType(DType.FLOAT, (4, 3, 2))
    assert refresh_types(g)
    assert types(g)["z"] == "f32[4,3,2]"
