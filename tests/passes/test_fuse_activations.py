"""fuse-activations: a Conv/Gemm and the activation that alone reads it are marked as one
kernel; the computation is untouched."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hwnas.frontends.onnx import import_onnx
from hwnas.passes.fuse_activations import FuseActivations, fusion_of
from hwnas.passes.testing import SEED, build_model, fires, node_lines, numeric, randn, unchanged


def conv_relu_conv_hardswish_gemm_clip() -> onnx.ModelProto:
    rng = np.random.default_rng(SEED)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
        helper.make_node("HardSwish", ["c2"], ["h"], name="hardswish"),
        helper.make_node("Flatten", ["h"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3"], ["g"], name="gemm"),
        helper.make_node("Clip", ["g", "lo", "hi"], ["y"], name="clip"),
    ]
    weights = {"w1": randn(rng, 4, 3, 1, 1), "w2": randn(rng, 4, 4, 1, 1), "w3": randn(rng, 64, 5),
               "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    return build_model(nodes, {"x": [1, 3, 4, 4]}, ["y"], weights)


def test_golden() -> None:
    result = fires(conv_relu_conv_hardswish_gemm_clip(), FuseActivations())
    assert node_lines(result.graph) == """\
  %c1: f32[1,4,4,4] = Conv(%x, %w1) @conv1 #{"fused_activation": {"node": "relu", "op": "Relu"}}
  %r: f32[1,4,4,4] = Relu(%c1) @relu #{"fused_into": {"node": "conv1"}}
  %c2: f32[1,4,4,4] = Conv(%r, %w2) @conv2 #{"fused_activation": {"node": "hardswish", "op": "HardSwish"}}
  %h: f32[1,4,4,4] = HardSwish(%c2) @hardswish #{"fused_into": {"node": "conv2"}}
  %f: f32[1,64] = Flatten(%h) @flatten
  %g: f32[1,5] = Gemm(%f, %w3) @gemm #{"fused_activation": {"node": "clip", "op": "Clip"}}
  %y: f32[1,5] = Clip(%g, %lo, %hi) @clip #{"fused_into": {"node": "gemm"}}
"""


def test_numeric() -> None:
    numeric(conv_relu_conv_hardswish_gemm_clip(), FuseActivations())


def test_stale_marks_are_cleared() -> None:
    graph = fires(conv_relu_conv_hardswish_gemm_clip(), FuseActivations()).graph
    # A later pass drops the Clip: the Gemm's mark names a node that is gone.
    clip = graph.node_by_name("clip")
    gemm = graph.node_by_name("gemm")
    graph.outputs = [gemm.outputs[0]]
    graph.remove_node(clip)
    result = fires(graph, FuseActivations())
    assert result.graph.node_by_name("gemm").ann.fused_activation is None
    assert result.graph.node_by_name("conv1").ann.fused_activation is not None


# -- negative ------------------------------------------------------------------------------


def test_producer_with_two_readers() -> None:
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "c"], ["y"], name="residual")]
    graph = import_onnx(build_model(nodes, {"x": [1, 3, 4, 4]}, ["y"], {"w": randn(rng, 3, 3, 1, 1)}))
    unchanged(graph, FuseActivations())
    assert fusion_of(graph.node_by_name("conv")) is None


def test_producer_output_is_a_graph_output() -> None:
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"], name="gemm"),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    graph = import_onnx(build_model(nodes, {"x": [2, 3]}, ["g", "y"], {"w": randn(rng, 3, 4)}))
    unchanged(graph, FuseActivations())
    assert fusion_of(graph.node_by_name("gemm")) is None


def test_activation_without_a_fusable_producer() -> None:
    nodes = [helper.make_node("Add", ["x", "x"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    unchanged(build_model(nodes, {"x": [2, 3]}, ["y"]), FuseActivations())
