"""quantize and quantize-mixed on weights that are not initializers (a Constant node,
ConstantOfShape as in the onnx light models, fp16 + Cast): they are computed once and
quantized; a layer that stays float is named with the reason."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.emit.qdq import to_qdq_onnx
from hwnas.cli import main
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph
from hwnas.passes import parse_pipeline
from hwnas.passes.quantize import Quantize, QuantizeError, quantize_layers
from hwnas.passes.testing import build_model, fires, randn

LAYERS = ("Conv", "Gemm", "MatMul")


def _quantized(graph: Graph) -> list[str]:
    return [n.name for n in graph.nodes if n.op in LAYERS and n.ann.quant is not None and n.ann.quant.w_bits]


def _integer_ops(model: onnx.ModelProto, tmp_path: Path) -> set[str]:
    """The ops onnxruntime runs after its own rewrites (QLinearConv when it fused a Q/DQ Conv)."""
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}


def _no_initializer_weights() -> onnx.ModelProto:
    """Three layers, none with an initializer weight: a Constant node (weight and bias), fp16
    initializers through Cast (shared by two convs), and a Gemm weight from ConstantOfShape."""
    rng = np.random.default_rng(0)
    w1, b1 = randn(rng, 4, 2, 3, 3), randn(rng, 4)
    w2 = randn(rng, 4, 4, 1, 1).astype(np.float16)
    nodes = [
        helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(w1), name="w1_const"),
        helper.make_node("Constant", [], ["b1"], value=numpy_helper.from_array(b1), name="b1_const"),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Cast", ["w2_half"], ["w2"], to=TensorProto.FLOAT, name="w2_cast"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[1, 1], name="conv2"),
        helper.make_node("Conv", ["c2", "w2"], ["c3"], kernel_shape=[1, 1], name="conv3"),
        helper.make_node("Flatten", ["c3"], ["f"], name="flat"),
        helper.make_node("ConstantOfShape", ["fw_shape"], ["fw"], value=numpy_helper.from_array(
            np.array([0.01], np.float32)), name="fw_fill"),
        helper.make_node("Gemm", ["f", "fw"], ["y"], transB=1, name="fc"),
    ]
    return build_model(nodes, {"x": [1, 2, 4, 4]}, ["y"],
                       {"w2_half": w2, "fw_shape": np.array([5, 64], np.int64)})


def test_weights_built_from_constants_are_quantized(tmp_path: Path) -> None:
    model = _no_initializer_weights()
    x = np.random.default_rng(1).uniform(-1, 2, (8, 2, 4, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing stays float, and nothing needs saying
        result = fires(model, Quantize(calib=str(_npz(tmp_path, x=x))))
    graph = result.graph
    assert _quantized(graph) == ["conv1", "conv2", "conv3", "fc"]
    assert all(n.input(1).const is not None for n in graph.nodes if n.op in LAYERS)
    assert graph.node_by_name("conv2").input(1) is graph.node_by_name("conv3").input(1)  # still one shared weight
    assert not {"Constant", "Cast", "ConstantOfShape"} & {n.op for n in graph.nodes}
    qdq = to_qdq_onnx(graph)
    assert "QLinearConv" in _integer_ops(qdq, tmp_path)  # the bias is a constant too: onnxruntime fuses
    feeds = {"x": x[:1]}
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, ref, atol=0.03 * np.abs(ref).max())


def test_named_layer_with_a_built_weight_and_the_api() -> None:
    graph = import_onnx(_no_initializer_weights())
    assert Quantize(layers="conv2").run(graph).changed
    assert _quantized(graph) == ["conv2"]
    assert graph.node_by_name("conv3").input(1).producer is not None  # conv3 still reads the Cast
    assert quantize_layers(graph, {"fc": (4, None)}, samples=2)  # the API takes them too
    assert graph.node_by_name("fc").input(1).const is not None


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    np.savez(tmp_path / "calib.npz", **arrays)
    return tmp_path / "calib.npz"


def test_layers_that_stay_float_are_named_with_the_reason() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w_in"], ["a"], kernel_shape=[1, 1], name="runtime_weight"),
        helper.make_node("Conv", ["a", "w"], ["b"], kernel_shape=[1, 1], name="ok"),
        helper.make_node("Flatten", ["b"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "f_t"], ["y"], name="attention_like"),  # two run-time tensors
        helper.make_node("Transpose", ["f"], ["f_t"], name="t"),
    ]
    nodes = [nodes[0], nodes[1], nodes[2], nodes[4], nodes[3]]
    model = build_model(nodes, {"x": [1, 2, 2, 2], "w_in": [1, 2, 1, 1]}, ["y"], {"w": randn(rng, 2, 1, 1, 1)})
    with pytest.warns(UserWarning) as record:
        assert Quantize(samples=2).run(graph := import_onnx(model)).changed
    said = [str(w.message) for w in record if "stays float" in str(w.message)]
    assert said == ["quantize: layer 'runtime_weight' (Conv) stays float: its weight (input 1) is a graph input"]
    assert _quantized(graph) == ["ok"]
    with pytest.raises(QuantizeError, match="node 'runtime_weight' \\(Conv\\) cannot be quantized: its weight"):
        Quantize(layers="runtime_weight").run(import_onnx(model))


def test_a_weight_onnxruntime_cannot_compute_is_reported() -> None:
    rng = np.random.default_rng(0)
    nodes = [  # a Reshape to an impossible shape: static, but no session can compute it
        helper.make_node("Reshape", ["w_flat", "bad_shape"], ["w"], name="bad_reshape"),
        helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1], name="conv"),
    ]
    model = onnx.helper.make_model(helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(randn(rng, 6), "w_flat"), numpy_helper.from_array(np.array([2, 2, 1, 1]),
                                                                                   "bad_shape")]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.warns(UserWarning, match="layer 'conv' \\(Conv\\) stays float: its weight 'w' cannot be computed "
                                         "before run time: onnxruntime cannot compute it"):
        assert not Quantize(samples=2).run(import_onnx(model)).changed
    with pytest.raises(QuantizeError, match="node 'conv' cannot be quantized: its weight 'w' cannot be computed"):
        Quantize(layers="conv", samples=2).run(import_onnx(model))


@pytest.mark.parametrize("name, layers", [("squeezenet", 26), ("resnet50", 54)])
def test_light_models_are_quantized_whole(name: str, layers: int, light_model_paths: dict[str, str],
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Their weights, biases and BatchNorm parameters are all ConstantOfShape; before, none was quantized.
    out = tmp_path / "q.onnx"
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    assert main(["opt", light_model_paths[name], "-p", "quantize", "-o", str(out),
                 "--calib-data", str(tmp_path / "calib.npz")]) == 0
    err = capsys.readouterr().err
    assert "stays float" not in err and "changed" in err
    q = onnx.load(out)
    assert "ConstantOfShape" not in {n.op_type for n in q.graph.node}
    ops = _integer_ops(q, tmp_path)
    assert "Conv" not in ops and "BatchNormalization" not in ops, ops  # every conv runs as QLinearConv
    graph = import_onnx(onnx.load(light_model_paths[name]))
    Quantize(samples=2, calib=str(tmp_path / "calib.npz")).run(graph)
    assert len(_quantized(graph)) == layers


def test_quantize_mixed_takes_built_weights(tmp_path: Path) -> None:
    graph = import_onnx(_no_initializer_weights())
    x = np.random.default_rng(1).uniform(-1, 2, (8, 2, 4, 4)).astype(np.float32)
    spec = f'quantize-mixed{{bits="4,8",budget=0.8,calib="{_npz(tmp_path, x=x)}"}}'
    with pytest.warns(UserWarning, match="weight bits of 4 layers"):
        assert parse_pipeline(spec).run(graph).changed
    assert _quantized(graph) == ["conv1", "conv2", "conv3", "fc"]


def test_a_float16_model_is_named_not_broken() -> None:
    # QuantizeLinear (opset 17) takes float32 only: annotating it would emit a model onnxruntime refuses.
    model = build_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1], name="conv")],
                        {"x": (TensorProto.FLOAT16, [1, 2, 4, 4])}, ["y"],
                        {"w": randn(np.random.default_rng(0), 3, 2, 1, 1).astype(np.float16)})
    with pytest.warns(UserWarning, match="layer 'conv' \\(Conv\\) stays float: its data input is float16; the QDQ "
                                         "form quantizes float32 models"):
        assert not Quantize(samples=2).run(import_onnx(model)).changed
