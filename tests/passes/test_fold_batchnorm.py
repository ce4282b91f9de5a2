"""fold-batchnorm: BatchNormalization folded into the Conv or Gemm before it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from hwnas.passes.fold_batchnorm import RULES, FoldBatchNorm
from hwnas.passes.testing import SEED, build_model, elided_text, fires, numeric, randn, unchanged, uniform

BN = helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"], name="bn")


def bn_weights(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"scale": uniform(rng, 0.5, 1.5, n), "shift": randn(rng, n), "mean": randn(rng, n),
            "var": uniform(rng, 0.5, 1.5, n)}


def conv_bn(group: int = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(SEED)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], group=group)
    weights = {"w": randn(rng, 4, 4 // group, 3, 3), "b": randn(rng, 4), **bn_weights(rng, 4)}
    return build_model([conv, BN], {"x": [1, 4, 6, 6]}, ["y"], weights)


def gemm_bn(n: int = 4, c_shape: tuple[int, ...] | None = (4,), **attrs: object) -> onnx.ModelProto:
    """Gemm(x[n,3], w, C) -> BN, with w as [3,4] or, for transB=1, [4,3]."""
    rng = np.random.default_rng(SEED)
    w = randn(rng, 4, 3) if attrs.get("transB") else randn(rng, 3, 4)
    weights = {"w": w, **bn_weights(rng, 4)}
    inputs = ["x", "w"]
    if c_shape is not None:
        weights["bias"] = randn(rng, *c_shape)
        inputs.append("bias")
    gemm = helper.make_node("Gemm", inputs, ["c"], name="gemm", **attrs)
    return build_model([gemm, BN], {"x": [n, 3]}, ["y"], weights)


def shared_weight() -> onnx.ModelProto:
    """Two convs read one weight; only the first is followed by a BatchNormalization."""
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), BN,
             helper.make_node("Conv", ["x", "w"], ["z"], name="other_conv")]
    return build_model(nodes, {"x": [1, 3, 4, 4]}, ["y", "z"], {"w": randn(rng, 4, 3, 1, 1), **bn_weights(rng, 4)})


# -- golden --------------------------------------------------------------------------------


def test_golden_conv() -> None:
    result = fires(conv_bn(), FoldBatchNorm())
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[1,4,6,6]
  const %conv_w_bnfolded: f32[4,4,3,3]
  const %conv_b_bnfolded: f32[4]
  %y: f32[1,4,6,6] = Conv(%x, %conv_w_bnfolded, %conv_b_bnfolded) {group=1, pads=[1, 1, 1, 1]} @conv
  output %y
}
"""


def test_golden_gemm_with_bias() -> None:
    result = fires(gemm_bn(), FoldBatchNorm())
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[4,3]
  const %gemm_w_bnfolded: f32[3,4]
  const %gemm_b_bnfolded: f32[4]
  %y: f32[4,4] = Gemm(%x, %gemm_w_bnfolded, %gemm_b_bnfolded) @gemm
  output %y
}
"""


def test_golden_gemm_trans_b_without_bias_gains_one() -> None:
    result = fires(gemm_bn(c_shape=None, transB=1, alpha=0.5), FoldBatchNorm())
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[4,3]
  const %gemm_w_bnfolded: f32[4,3]
  const %gemm_b_bnfolded: f32[4]
  %y: f32[4,4] = Gemm(%x, %gemm_w_bnfolded, %gemm_b_bnfolded) {alpha=0.5, transB=1} @gemm
  output %y
}
"""


def test_golden_gemm_beta_without_bias_is_dropped() -> None:
    # beta scaled nothing before; the bias the fold adds must not be scaled by it.
    result = fires(gemm_bn(c_shape=None, beta=0.5), FoldBatchNorm())
    (gemm,) = result.graph.nodes
    assert gemm.attr("beta", 1.0) == 1.0


def test_golden_shared_weight_stays_for_its_other_reader() -> None:
    result = fires(shared_weight(), FoldBatchNorm())
    assert elided_text(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[1,3,4,4]
  const %w: f32[4,3,1,1]
  const %conv_w_bnfolded: f32[4,3,1,1]
  const %conv_b_bnfolded: f32[4]
  %y: f32[1,4,4,4] = Conv(%x, %conv_w_bnfolded, %conv_b_bnfolded) @conv
  %z: f32[1,4,4,4] = Conv(%x, %w) @other_conv
  output %y, %z
}
"""


def test_folded_weights_are_the_closed_form() -> None:
    model = conv_bn()
    a = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    w, b, scale, shift, mean, var = (a[k] for k in ("w", "b", "scale", "shift", "mean", "var"))
    s = scale / np.sqrt(var + 1e-5)
    graph = fires(model, FoldBatchNorm()).graph
    np.testing.assert_allclose(graph.constants["conv_w_bnfolded"].const, w * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(graph.constants["conv_b_bnfolded"].const, (b - mean) * s + shift, rtol=1e-6)


# -- numeric -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [conv_bn(), conv_bn(group=4), gemm_bn(), gemm_bn(transB=1), gemm_bn(c_shape=None, transB=1, alpha=0.5),
     gemm_bn(c_shape=(1, 4)), gemm_bn(c_shape=(1,)), gemm_bn(c_shape=None, beta=0.5), shared_weight()],
    ids=["conv", "depthwise-conv", "gemm", "gemm-transB", "gemm-transB-alpha-no-bias", "gemm-bias-1xN",
         "gemm-scalar-bias", "gemm-beta-no-bias", "shared-weight"],
)
def test_numeric(model: onnx.ModelProto) -> None:
    numeric(model, FoldBatchNorm())


# -- negative ------------------------------------------------------------------------------


def test_conv_output_with_two_readers() -> None:
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), BN,
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    model = build_model(nodes, {"x": [1, 3, 4, 4]}, ["y", "r"], {"w": randn(rng, 4, 3, 1, 1), **bn_weights(rng, 4)})
    assert "Conv output has other readers" in unchanged(model, FoldBatchNorm(), RULES)["bn"]


def test_conv_output_that_is_also_a_graph_output() -> None:
    # Folding would rescale the conv's weights, and so the graph output %c.
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), BN]
    model = build_model(nodes, {"x": [1, 3, 4, 4]}, ["c", "y"], {"w": randn(rng, 4, 3, 1, 1), **bn_weights(rng, 4)})
    assert "Conv output is also a graph output" in unchanged(model, FoldBatchNorm(), RULES)["bn"]


def test_conv_weight_not_a_constant() -> None:
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), BN]
    model = build_model(nodes, {"x": [1, 3, 4, 4], "w": [4, 3, 1, 1]}, ["y"], bn_weights(rng, 4))
    assert "Conv weight is not a constant" in unchanged(model, FoldBatchNorm(), RULES)["bn"]


def test_bn_statistics_not_constants() -> None:
    rng = np.random.default_rng(SEED)
    weights = {"w": randn(rng, 4, 3, 1, 1), **bn_weights(rng, 4)}
    del weights["mean"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), BN]
    model = build_model(nodes, {"x": [1, 3, 4, 4], "mean": [4]}, ["y"], weights)
    assert "scale, bias, mean or variance is not a constant" in unchanged(model, FoldBatchNorm(), RULES)["bn"]


def test_bn_after_something_else() -> None:
    rng = np.random.default_rng(SEED)
    model = build_model([helper.make_node("Relu", ["x"], ["c"], name="relu"), BN], {"x": [1, 4, 2, 2]}, ["y"],
                        bn_weights(rng, 4))
    assert "input is not produced by a Conv or Gemm" in unchanged(model, FoldBatchNorm(), RULES)["bn"]


def test_gemm_bias_per_row() -> None:
    # C of shape (4, 1) has as many elements as there are columns, but it adds per row.
    model = gemm_bn(n=4, c_shape=(4, 1))
    assert "Gemm bias is not per output column" in unchanged(model, FoldBatchNorm(), RULES)["bn"]


def test_gemm_beta_with_bias() -> None:
    model = gemm_bn(beta=0.5)
    assert "Gemm has beta != 1" in unchanged(model, FoldBatchNorm(), RULES)["bn"]
