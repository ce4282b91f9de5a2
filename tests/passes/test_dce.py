"""dce: nodes no graph output depends on, and constants nothing reads, are removed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hwnas.passes.dce import DeadCodeElimination
from hwnas.passes.testing import SEED, build_model, elided_text, fires, numeric, randn, unchanged


def with_dead_code() -> onnx.ModelProto:
    rng = np.random.default_rng(SEED)
    nodes = [
        helper.make_node("Split", ["x", "halves"], ["a", "b"], name="split", axis=1),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
        # Dead: nothing reads %s, so the Add and the constant %bias only it reads go too.
        helper.make_node("Add", ["x", "bias"], ["d"], name="add"),
        helper.make_node("Sigmoid", ["d"], ["s"], name="sigmoid"),
    ]
    weights = {"halves": np.array([2, 2], np.int64), "bias": randn(rng, 2, 4), "unused": randn(rng, 3)}
    model = build_model(nodes, {"x": [2, 4]}, ["y"], weights)
    return model


def test_golden() -> None:
    result = fires(with_dead_code(), DeadCodeElimination())
    # Split stays whole although its second output %b is unread.
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[2,4]
  const %halves: i64[2]
  %a: f32[2,2], %b: f32[2,2] = Split(%x, %halves) {axis=1} @split
  %y: f32[2,2] = Relu(%a) @relu
  output %y
}
"""


def test_numeric() -> None:
    numeric(with_dead_code(), DeadCodeElimination())


def test_only_an_unused_constant() -> None:
    model = build_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {"x": [2]}, ["y"],
                        {"unused": np.zeros(3, np.float32)})
    result = fires(model, DeadCodeElimination())
    assert list(result.graph.constants) == []


def test_nothing_dead() -> None:
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Split", ["x", "halves"], ["a", "b"], name="split", axis=1),
             helper.make_node("Add", ["a", "bias"], ["y"], name="add"),
             helper.make_node("Relu", ["b"], ["z"], name="relu")]
    weights = {"halves": np.array([2, 2], np.int64), "bias": randn(rng, 2, 2)}
    model = build_model(nodes, {"x": [2, 4]}, ["y", "z"], weights)
    unchanged(model, DeadCodeElimination())
