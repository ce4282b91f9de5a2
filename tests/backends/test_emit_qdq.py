"""QDQ ONNX emission and PyTorch fake-quant: the same numbers, real integer kernels at 8 bits."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper

from hwnas.backends.emit.qdq import (
    fake_quant_weight,
    to_qdq_onnx,
    weight_scales,
)
from hwnas.backends.emit.torch import to_torch, weights_to_graph
from hwnas.errors import UnsupportedModelError
from hwnas.ir.annotations import Granularity, QuantSpec
from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph
from hwnas.passes.quantize import quantize_layers

from .graphs import Builder

X = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _net() -> Graph:
    b = Builder(("N", 3, 16, 16), "qnet")
    y = b.op("Relu", b.conv(b.x, 8, name="conv1"), name="relu1")
    y = b.op("Relu", b.conv(y, 8, group=8, name="dw"), name="relu2")
    y = b.conv(y, 16, k=1, name="pw")
    y = b.op("GlobalAveragePool", y, name="gap")
    y = b.op("Flatten", y, name="flat")
    g = b.done(b.gemm(y, 10, name="fc"))
    for name in ("conv1", "dw", "pw", "fc"):  # nonzero biases, so the int32 bias path is exercised
        b = g.node_by_name(name).input(2)
        b.const = np.random.default_rng(2).standard_normal(b.const.shape).astype(np.float32) * 0.1
    return g


def _quantized(bits: dict[str, tuple[int | None, int | None]], method: str = "minmax") -> Graph:
    g = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random calibration data, on purpose
        quantize_layers(g, bits, method=method, samples=4)  # type: ignore[arg-type]
    return g


def _all(w: int | None, a: int | None) -> dict[str, tuple[int | None, int | None]]:
    return dict.fromkeys(("conv1", "dw", "pw", "fc"), (w, a))


def _session(model: onnx.ModelProto, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    if optimized is None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # QDQ as written
    else:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _torch(g: Graph, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return to_torch(g)(torch.from_numpy(x)).numpy()


def _assert_matches_torch(g: Graph, model: onnx.ModelProto, x: np.ndarray = X) -> np.ndarray:
    onnx.checker.check_model(model, full_check=True)
    y = _session(model).run(None, {"x": x})[0]
    ref = _torch(g, x)
    # Same grids, same rounding; only float accumulation order differs.
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
    return y


def test_8bit_is_real_qdq_and_onnxruntime_fuses_integer_kernels(tmp_path: Path) -> None:
    g = _quantized(_all(8, 8))
    model = to_qdq_onnx(g)
    ops = [n.op_type for n in model.graph.node]
    # x, w, b per node; pw's output, which GlobalAveragePool reads; and GlobalAveragePool's
    # output on fc's grid (Flatten moves values), so fc's own pair after Flatten is the same grid
    assert ops.count("QuantizeLinear") == 6 and ops.count("DequantizeLinear") == 4 + 4 + 4 + 2
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert {types[n.input(1).name + "_q"] for n in g.nodes if n.ann.quant} == {TensorProto.INT8}
    assert {types[n.input(2).name + "_q"] for n in g.nodes if n.ann.quant} == {TensorProto.INT32}
    assert not any(t.data_type == TensorProto.FLOAT and t.name.startswith("w") and len(t.dims) > 1
                   for t in model.graph.initializer), "float weights left behind"
    y = _assert_matches_torch(g, model)

    optimized = tmp_path / "opt.onnx"
    y_int = _session(model, optimized).run(None, {"x": X})[0]
    fused = [n.op_type for n in onnx.load(optimized).graph.node]
    # conv1 and dw reach the next Q through Relu, pw its own output Q: all QLinearConv;
    # fc becomes QGemm, and the pooling between them runs on integers.
    assert fused.count("QLinearConv") == 3 and fused.count("QGemm") == 1
    assert "QLinearGlobalAveragePool" in fused and "GlobalAveragePool" not in fused, fused
    np.testing.assert_allclose(y_int, y, rtol=0, atol=0.01 * float(np.abs(y).max()))


def test_matmul_with_constant_weight_becomes_matmul_integer(tmp_path: Path) -> None:
    b = Builder((4, 16), "mm")
    w = b.g.add_constant(np.random.default_rng(3).standard_normal((16, 12)).astype(np.float32), "w")
    y = b.op("MatMul", b.x, w, name="mm")
    g = b.done(b.op("Relu", y, name="relu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_layers(g, {"mm": (8, 8)}, samples=4)
    model = to_qdq_onnx(g)
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("w"))
    assert onnx.helper.get_attribute_value(dq.attribute[0]) == 1  # [K, N]: channels on axis 1
    x = np.random.default_rng(4).standard_normal((4, 16)).astype(np.float32)
    _assert_matches_torch(g, model, x)
    _session(model, tmp_path / "opt.onnx").run(None, {"x": x})
    assert "MatMulIntegerToFloat" in [n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node]


def test_4bit_weights_with_8bit_data_run_on_integer_kernels(tmp_path: Path) -> None:
    g = _quantized(_all(4, 8))
    model = to_qdq_onnx(g)
    ints = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8
            and len(t.dims) > 1]
    assert ints and all(np.abs(w).max() <= 7 for w in ints), "4-bit grid in int8 storage"
    assert not any(t.data_type in (TensorProto.INT4, TensorProto.UINT4) for t in model.graph.initializer)
    y = _assert_matches_torch(g, model)
    optimized = tmp_path / "opt.onnx"
    y_int = _session(model, optimized).run(None, {"x": X})[0]
    fused = [n.op_type for n in onnx.load(optimized).graph.node]
    assert fused.count("QLinearConv") == 3, fused
    np.testing.assert_allclose(y_int, y, rtol=0, atol=0.01 * float(np.abs(y).max()))


@pytest.mark.parametrize("bits", [(2, 8), (3, 3), (5, 6), (7, 7), (16, 16), (6, None), (8, 5)])
def test_other_widths_are_exact_fake_quant(bits: tuple[int, int | None]) -> None:
    g = _quantized(_all(*bits), method="mse")
    model = to_qdq_onnx(g)
    ops = {n.op_type for n in model.graph.node}
    assert ("Round" in ops) == (bits[1] is not None and bits[1] != 8)
    w = next(numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 4)
    if bits[0] < 8:  # the b-bit grid's integers, stored in int8
        assert w.dtype == np.int8 and np.abs(w).max() <= 2 ** (bits[0] - 1) - 1
    elif bits[0] == 16:  # floats already on the grid, whose top level is the largest weight
        k = w / weight_scales(w, bits[0], "minmax")[:, None, None, None]
        np.testing.assert_allclose(k, np.round(k), atol=1e-3)
    _assert_matches_torch(g, model)


def test_mixed_layers_and_per_tensor_weights() -> None:
    g = _quantized({"conv1": (8, 8), "dw": (4, 8), "pw": (6, None), "fc": (8, 16)})
    pw = g.node_by_name("pw")
    pw.ann.quant = QuantSpec(w_bits=6, w_granularity=Granularity.PER_TENSOR)
    model = to_qdq_onnx(g)
    _assert_matches_torch(g, model)


def test_weight_grid_is_the_same_in_both_emissions() -> None:
    w = torch.from_numpy(np.random.default_rng(5).standard_normal((6, 3, 3, 3)).astype(np.float32))
    for method in ("minmax", "mse"):
        fq, s = fake_quant_weight(w, QuantSpec(w_bits=4, method=method), 0)
        k = torch.round(fq / s[:, None, None, None])  # the int4 tensor to_qdq_onnx stores
        assert torch.equal(k * s[:, None, None, None], fq) and k.abs().max() <= 7  # what DequantizeLinear gives
        assert torch.equal(torch.from_numpy(weight_scales(w.numpy(), 4, method)), s)
    mse, mm = weight_scales(w, 3, "mse"), weight_scales(w, 3, "minmax")
    assert torch.all(mse <= mm) and torch.any(mse < mm)  # MSE clips outliers at low widths


def test_fake_quant_training_has_gradients_and_moves_scales() -> None:
    g = _quantized(_all(4, 8))
    module = to_torch(g)
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    x = torch.from_numpy(X)
    before = weight_scales(g.node_by_name("conv1").input(1).const, 4)
    loss = module(x).square().mean()
    loss.backward()
    grads = {name: module.params[key].grad for name, key in module._keys.items()}
    for n in g.nodes:
        if n.ann.quant is not None:
            assert grads[n.input(1).name] is not None and grads[n.input(1).name].abs().sum() > 0, n.name
    opt.step()
    weights_to_graph(module)
    assert not np.array_equal(weight_scales(g.node_by_name("conv1").input(1).const, 4), before)
    _assert_matches_torch(g, to_qdq_onnx(g))  # the trained weights export to the same numbers


def test_float_path_is_unchanged() -> None:
    g = _net()
    model = to_qdq_onnx(g)
    assert not {n.op_type for n in model.graph.node} & {"QuantizeLinear", "DequantizeLinear", "Round"}
    np.testing.assert_allclose(_session(model).run(None, {"x": X})[0], _torch(g, X), rtol=1e-5, atol=1e-4)


def test_refuses_unquantizable_annotations() -> None:
    g = _net()
    g.node_by_name("conv1").ann.quant = QuantSpec(w_bits=8, a_bits=8)
    with pytest.raises(UnsupportedModelError, match="'conv1' .*no calibrated scale"):
        to_qdq_onnx(g)
    g.node_by_name("conv1").ann.quant = None
    g.node_by_name("relu1").ann.quant = QuantSpec(w_bits=8)
    with pytest.raises(UnsupportedModelError, match="'relu1' .*not a constant weight"):
        to_qdq_onnx(g)


def test_gemm_without_transposed_weight() -> None:
    b = Builder((1, 12), "gemm")
    w = b.g.add_constant(np.random.default_rng(6).standard_normal((12, 5)).astype(np.float32), "w")
    g = b.done(b.op("Gemm", b.x, w, name="fc", alpha=Attr.float(0.5)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_layers(g, {"fc": (5, 8)}, samples=4)
    _assert_matches_torch(g, to_qdq_onnx(g), np.random.default_rng(7).standard_normal((1, 12)).astype(np.float32))


def test_batchnorms_are_folded_so_integer_kernels_fuse(tmp_path: Path) -> None:
    from hwnas.frontends import load_graph
    from hwnas.passes.quantize import quantizable, quantize_layers

    g = load_graph(Path(__file__).parents[2] / "examples" / "small_cnn.onnx")
    assert any(n.op == "BatchNormalization" for n in g.nodes)
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    quantize_layers(g, {n.name: (8, 8) for n in g.nodes if quantizable(n)}, calib={"image": x})
    assert not any(n.op == "BatchNormalization" for n in g.nodes)
    optimized = tmp_path / "opt.onnx"
    _session(to_qdq_onnx(g), optimized)
    fused = [n.op_type for n in onnx.load(optimized).graph.node]
    assert fused.count("QLinearConv") >= 1 and "BatchNormalization" not in fused, fused


def test_a_dead_channel_keeps_its_bias(tmp_path: Path) -> None:
    """A channel whose weights are all but zero (a folded BatchNorm with γ ≈ 0): its int32
    bias must not overflow, so the channel still outputs its bias."""
    g = _net()
    w = g.node_by_name("pw").input(1)
    w.const = w.const.copy()
    w.const[3] *= 1e-9
    g.node_by_name("pw").input(2).const[3] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_layers(g, _all(8, 8), samples=4)
    model = to_qdq_onnx(g)
    bias = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith("b") and
                t.data_type == TensorProto.INT32 and len(t.dims) == 1 and t.dims[0] == 16)
    assert np.abs(bias.astype(np.int64)).max() < 2**31 - 1
    _assert_matches_torch(g, model)
    g.outputs[0] = next(n for n in g.nodes if n.name == "pw").outputs[0]  # read pw's output itself
    pw = _session(to_qdq_onnx(g)).run(None, {"x": X})[0]
    np.testing.assert_allclose(pw[:, 3], 0.5, atol=0.01)


def test_grids_carry_through_maxpool_so_the_graph_stays_integer(tmp_path: Path) -> None:
    b = Builder(("N", 3, 16, 16), "pooled")
    y = b.op("Relu", b.conv(b.x, 8, name="conv1"), name="relu1")
    y = b.op("MaxPool", y, name="pool", kernel_shape=Attr.ints([2, 2]), strides=Attr.ints([2, 2]))
    y = b.op("Relu", b.conv(y, 8, name="conv2"), name="relu2")
    y = b.op("Flatten", b.op("GlobalAveragePool", y, name="gap"), name="flat")
    g = b.done(b.gemm(y, 4, name="fc"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_layers(g, {"conv1": (8, 8), "conv2": (8, 8), "fc": (8, 8)}, samples=4)
    c1, c2 = g.node_by_name("conv1").ann.quant, g.node_by_name("conv2").ann.quant
    assert (c2.a_scale, c2.a_zero_point) == (c1.o_scale, c1.o_zero_point)
    model = to_qdq_onnx(g)
    _assert_matches_torch(g, model)
    optimized = tmp_path / "opt.onnx"
    _session(model, optimized)
    fused = [n.op_type for n in onnx.load(optimized).graph.node]
    assert fused.count("QLinearConv") == 2 and fused.count("QuantizeLinear") <= 2, fused
    assert not any(op in ("Conv", "MaxPool") for op in fused), fused


def test_relu6_convs_become_integer_kernels(tmp_path: Path) -> None:
    """Conv → Clip(0, 6) → Conv, as MobileNets and EfficientNet-Lite write ReLU6: the grids
    are scalars inside the Clip's bounds, so onnxruntime drops the Clip and fuses."""
    b = Builder(("N", 8, 16, 16), "relu6")
    lo, hi = b.g.add_constant(np.array(0, np.float32), "lo"), b.g.add_constant(np.array(6, np.float32), "hi")
    y = b.op("Clip", b.conv(b.x, 16, name="c1"), lo, hi, name="clip1")
    y = b.op("Clip", b.conv(y, 16, group=16, name="dw"), lo, hi, name="clip2")
    g = b.done(b.op("Add", b.conv(y, 8, k=1, name="pw"), b.x, name="add"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_layers(g, {"c1": (8, 8), "dw": (8, 8), "pw": (8, 8)}, samples=8)
    model = to_qdq_onnx(g)
    assert all(len(t.dims) == 0 for t in model.graph.initializer if t.name.endswith(("_scale", "_zp"))
               and t.name.startswith(("x", "clip")))
    x = np.random.default_rng(3).standard_normal((2, 8, 16, 16)).astype(np.float32)
    _assert_matches_torch(g, model, x)
    optimized = tmp_path / "opt.onnx"
    _session(model, optimized)
    fused = [n.op_type for n in onnx.load(optimized).graph.node]
    assert fused.count("QLinearConv") == 3 and "FusedConv" not in fused and "Clip" not in fused, fused


def test_residual_adds_run_on_integers(tmp_path: Path) -> None:
    b = Builder(("N", 8, 16, 16), "residual")
    skip = b.op("Relu", b.conv(b.x, 8, name="c1"), name="relu1")
    y = b.op("Relu", b.conv(skip, 8, name="c2"), name="relu2")
    y = b.op("Relu", b.op("Add", b.conv(y, 8, name="c3"), skip, name="add"), name="relu3")
    y = b.op("Flatten", b.op("GlobalAveragePool", b.conv(y, 8, name="c4"), name="gap"), name="flat")
    g = b.done(b.gemm(y, 4, name="fc"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_layers(g, {n: (8, 8) for n in ("c1", "c2", "c3", "c4", "fc")}, samples=8)
    add, c4 = g.node_by_name("add").ann.quant, g.node_by_name("c4").ann.quant
    assert add is not None and add.w_bits is None and add.o_scale is not None
    assert (c4.a_scale, c4.a_zero_point) == (add.o_scale, add.o_zero_point), "the next conv reads the Add's grid"
    model = to_qdq_onnx(g)
    x = np.random.default_rng(4).standard_normal((2, 8, 16, 16)).astype(np.float32)
    _assert_matches_torch(g, model, x)
    optimized = tmp_path / "opt.onnx"
    _session(model, optimized)
    fused = [n.op_type for n in onnx.load(optimized).graph.node]
    assert "QLinearAdd" in fused and "Add" not in fused and fused.count("QLinearConv") == 4, fused
