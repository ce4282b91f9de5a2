"""Reshape targets computed from a tensor's shape at run time (torch's `unflatten` in attention:
Shape, Slice, Mod, Concat) are known when the shape is: the registry evaluates the small integer
chain, and its type is the one onnxruntime produces."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.ops.tensor import shape_value
from hwnas.ir.registry import infer_types, refresh_types


def _unflatten_model(x_shape: list[int | str]) -> onnx.ModelProto:
    """x (..., 48) reshaped to (..., 3, 16) as torch exports `unflatten(-1, (3, 16))`."""
    consts = {"zero": [0], "rank": [3], "two": [2], "one": [1], "end": [2**63 - 1], "split": [3, 16]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Mod", ["two", "rank"], ["axis"]),  # -1 % rank, as the exporter writes it
        helper.make_node("Add", ["axis", "one"], ["after"]),
        helper.make_node("Slice", ["shape", "zero", "axis"], ["head"]),
        helper.make_node("Slice", ["shape", "after", "end"], ["tail"]),
        helper.make_node("Concat", ["head", "split", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "unflatten", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_reshape_target_from_the_input_shape_agrees_with_onnxruntime() -> None:
    model = _unflatten_model([5, 2, 48])
    feeds = {"x": np.zeros((5, 2, 48), np.float32)}
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    graph = import_onnx(model)
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    target = shape_value(reshape.input(1))
    assert target is not None and target.tolist() == [5, 2, 3, 16]
    (t,) = infer_types(reshape)
    assert t is not None and t.shape == want.shape
    refresh_types(graph)
    assert graph.outputs[0].type is not None and graph.outputs[0].type.shape == want.shape


def test_shape_of_a_symbolic_dim_stays_unknown() -> None:
    graph = import_onnx(_unflatten_model(["n", 2, 48]))
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    assert shape_value(reshape.input(1)) is None  # the batch is not known before run time
    assert infer_types(reshape) == [reshape.outputs[0].type]  # onnx's inference, as without the chain's value
