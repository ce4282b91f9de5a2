"""eliminate-noops: Identity, inference Dropout, same-shape Reshape, identity Transpose,
cancelling Transpose pairs and same-type Cast are bypassed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.passes.eliminate_noops import RULES, EliminateNoops
from hwnas.passes.testing import build_model, elided_text, fires, numeric, unchanged

X = {"x": [2, 3, 4]}


def before_relu(*noops: onnx.NodeProto, weights: dict[str, np.ndarray] | None = None,
                inputs: dict | None = None) -> onnx.ModelProto:
    """x -> noops... -> Relu -> y; the last noop writes %n."""
    relu = helper.make_node("Relu", ["n"], ["y"], name="relu")
    return build_model([*noops, relu], inputs or X, ["y"], weights)


def transpose(x: str, y: str, name: str, perm: list[int] | None) -> onnx.NodeProto:
    return helper.make_node("Transpose", [x], [y], name=name, **({"perm": perm} if perm is not None else {}))


NOOPS = {
    "identity": lambda: before_relu(helper.make_node("Identity", ["x"], ["n"], name="noop")),
    "dropout": lambda: before_relu(helper.make_node("Dropout", ["x"], ["n"], name="noop")),
    "dropout-training-false": lambda: before_relu(
        helper.make_node("Dropout", ["x", "ratio", "training"], ["n"], name="noop"),
        weights={"ratio": np.array(0.5, np.float32), "training": np.array(False)}),
    "reshape": lambda: before_relu(helper.make_node("Reshape", ["x", "shape"], ["n"], name="noop"),
                                   weights={"shape": np.array([2, 3, 4], np.int64)}),
    "reshape-with-minus-one": lambda: before_relu(helper.make_node("Reshape", ["x", "shape"], ["n"], name="noop"),
                                                  weights={"shape": np.array([0, -1, 4], np.int64)}),
    "transpose-identity": lambda: before_relu(transpose("x", "n", "noop", [0, 1, 2])),
    "transpose-1d-default-perm": lambda: before_relu(transpose("x", "n", "noop", None), inputs={"x": [5]}),
    "cast": lambda: before_relu(helper.make_node("Cast", ["x"], ["n"], name="noop", to=TensorProto.FLOAT)),
}

RELU_OF_X = """\
graph g {
  opset {"": 17}
  input %x: f32[2,3,4]
  %y: f32[2,3,4] = Relu(%x) @relu
  output %y
}
"""


# -- golden --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(set(NOOPS) - {"transpose-1d-default-perm"}))
def test_golden_single_noop(case: str) -> None:
    # The noop is gone. Constants only it read (ratio, shape) stay: removing them is dce's job.
    result = fires(NOOPS[case](), EliminateNoops())
    lines = elided_text(result.graph).splitlines()
    assert [ln for ln in lines if not ln.startswith("  const ")] == RELU_OF_X.splitlines()


def test_golden_transpose_pair() -> None:
    model = before_relu(transpose("x", "t", "inner", [1, 2, 0]), transpose("t", "n", "outer", [2, 0, 1]))
    result = fires(model, EliminateNoops())
    # The inner Transpose now has no reader; removing it is dce's job.
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[2,3,4]
  %t: f32[3,4,2] = Transpose(%x) {perm=[1, 2, 0]} @inner
  %y: f32[2,3,4] = Relu(%x) @relu
  output %y
}
"""


def test_golden_chain_of_noops_and_graph_output_keeps_its_name() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["i"], name="identity"),
             helper.make_node("Cast", ["i"], ["c"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Dropout", ["c"], ["y"], name="dropout")]
    result = fires(build_model(nodes, X, ["y"]), EliminateNoops())
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[2,3,4]
  %y: f32[2,3,4] = Relu(%x) @relu
  output %y
}
"""


# -- numeric -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(NOOPS))
def test_numeric_single_noop(case: str) -> None:
    numeric(NOOPS[case](), EliminateNoops())


def test_numeric_transpose_pair_with_default_perm() -> None:
    # Transpose without perm reverses the axes; twice is the identity.
    model = before_relu(transpose("x", "t", "inner", None), transpose("t", "n", "outer", None))
    numeric(model, EliminateNoops())


def test_numeric_transpose_pair_whose_inner_has_another_reader() -> None:
    model = build_model(
        [transpose("x", "t", "inner", [1, 2, 0]), transpose("t", "u", "outer", [2, 0, 1]),
         helper.make_node("Relu", ["u"], ["y"], name="relu"), helper.make_node("Neg", ["t"], ["z"], name="neg")],
        X, ["y", "z"])
    numeric(model, EliminateNoops())


# -- negative ------------------------------------------------------------------------------


def declined(model: onnx.ModelProto) -> str:
    return unchanged(model, EliminateNoops(), RULES)["noop"]


def test_reshape_that_changes_shape() -> None:
    model = before_relu(helper.make_node("Reshape", ["x", "shape"], ["n"], name="noop"),
                        weights={"shape": np.array([6, 4], np.int64)})
    assert "shape changes from f32[2,3,4] to f32[6,4]" in declined(model)


def test_transpose_pair_that_does_not_cancel() -> None:
    model = before_relu(transpose("x", "t", "inner", [1, 2, 0]), transpose("t", "n", "noop", [1, 2, 0]))
    assert "permutations (1, 2, 0) and (1, 2, 0) do not cancel" in declined(model)


def test_single_transpose_that_permutes() -> None:
    model = before_relu(transpose("x", "n", "noop", [0, 2, 1]))
    assert "input is not produced by a Transpose" in declined(model)


def test_dropout_in_training_mode() -> None:
    model = before_relu(helper.make_node("Dropout", ["x", "ratio", "training"], ["n"], name="noop"),
                        weights={"ratio": np.array(0.5, np.float32), "training": np.array(True)})
    assert "training_mode is on" in declined(model)


def test_dropout_with_training_mode_from_an_input() -> None:
    model = before_relu(helper.make_node("Dropout", ["x", "", "training"], ["n"], name="noop"),
                        inputs={**X, "training": (TensorProto.BOOL, [])})
    assert "training_mode is not a constant" in declined(model)


def test_dropout_whose_mask_is_read() -> None:
    nodes = [helper.make_node("Dropout", ["x"], ["n", "mask"], name="noop"),
             helper.make_node("Relu", ["n"], ["y"], name="relu"),
             helper.make_node("Not", ["mask"], ["m"], name="not")]
    assert "a secondary output is read" in declined(build_model(nodes, X, ["y", "m"]))


def test_cast_that_changes_type() -> None:
    model = before_relu(helper.make_node("Cast", ["x"], ["c"], name="noop", to=TensorProto.DOUBLE),
                        helper.make_node("Cast", ["c"], ["n"], name="back", to=TensorProto.FLOAT))
    assert "cast changes the element type" in declined(model)


def test_identity_from_graph_input_to_graph_output() -> None:
    # %y must stay a graph output by that name, and %x cannot be renamed.
    model = build_model([helper.make_node("Identity", ["x"], ["y"], name="noop")], X, ["y"])
    assert "graph output that its input cannot stand in for" in declined(model)
