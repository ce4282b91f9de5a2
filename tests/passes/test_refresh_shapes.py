"""refresh-shapes: every value's type is re-inferred from its inputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph
from hwnas.passes.refresh_shapes import RefreshShapes
from hwnas.passes.testing import SEED, build_model, elided_text, fires, numeric, randn, unchanged


def conv_relu_pool(batch: int | str = 1, flatten: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["y"], name="flatten")]
    if not flatten:
        nodes[-2].output[0] = "y"
        del nodes[-1]
    return build_model(nodes, {"x": [batch, 3, 8, 8]}, ["y"], {"w": randn(rng, 4, 3, 3, 3), "b": randn(rng, 4)})


def untyped(model: onnx.ModelProto) -> Graph:
    """The imported graph with every node output's type forgotten."""
    graph = import_onnx(model)
    for n in graph.nodes:
        for v in n.outputs:
            v.type = None
    return graph


def test_golden_after_a_weight_changed_shape() -> None:
    # As after a pass that widened the conv from 4 to 6 output channels.
    graph = import_onnx(conv_relu_pool())
    conv = graph.node_by_name("conv")
    rng = np.random.default_rng(SEED)
    conv.set_input(1, graph.add_constant(randn(rng, 6, 3, 3, 3), "w6"))
    conv.set_input(2, graph.add_constant(randn(rng, 6), "b6"))
    graph.remove_unused_constants()
    result = fires(graph, RefreshShapes())
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[1,3,8,8]
  const %w6: f32[6,3,3,3]
  const %b6: f32[6]
  %c: f32[1,6,3,3] = Conv(%x, %w6, %b6) {strides=[2, 2]} @conv
  %r: f32[1,6,3,3] = Relu(%c) @relu
  %p: f32[1,6,1,1] = GlobalAveragePool(%r) @pool
  %y: f32[1,6] = Flatten(%p) @flatten
  output %y
}
"""


def test_golden_types_from_nothing() -> None:
    result = fires(untyped(conv_relu_pool("N", flatten=False)), RefreshShapes())
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[N,3,8,8]
  const %w: f32[4,3,3,3]
  const %b: f32[4]
  %c: f32[N,4,3,3] = Conv(%x, %w, %b) {strides=[2, 2]} @conv
  %r: f32[N,4,3,3] = Relu(%c) @relu
  %y: f32[N,4,1,1] = GlobalAveragePool(%r) @pool
  output %y
}
"""


def test_numeric() -> None:
    # The emitted model carries the refreshed types as value_info; onnxruntime checks them.
    model = conv_relu_pool()
    numeric(model, RefreshShapes(), graph=untyped(model))


def test_refreshed_types_are_the_imported_ones() -> None:
    model = conv_relu_pool()
    assert elided_text(fires(untyped(model), RefreshShapes()).graph) == elided_text(import_onnx(model))


# -- negative ------------------------------------------------------------------------------


def test_freshly_imported() -> None:
    unchanged(conv_relu_pool("N"), RefreshShapes())


def test_dims_found_by_data_propagation_are_kept() -> None:
    # The Reshape target is computed (Shape -> Gather -> Concat): the registry cannot
    # tell the output's dims, onnx's whole-model data propagation did ([2,12]).
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="gather"),
             helper.make_node("Concat", ["n", "minus_one"], ["target"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")]
    weights = {"zero": np.array([0], np.int64), "minus_one": np.array([-1], np.int64)}
    graph = import_onnx(build_model(nodes, {"x": [2, 3, 4]}, ["y"], weights))
    assert str(graph.outputs[0].type) == "f32[2,12]"
    unchanged(graph, RefreshShapes())
