"""Grids through ops that only move values: a tensor after MaxPool read by a quantized conv
and a residual Add gets one Q/DQ pair for both, and a pooling before Flatten takes its
reader's grid, so onnxruntime keeps the digits CNN on integer kernels from the first
QuantizeLinear to the last QGemm, at least as far as its own quantize_static does."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.emit.qdq import tensor_grids, to_qdq_onnx
from hwnas.backends.emit.torch import to_torch
from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph
from hwnas.passes import PassRunner, parse_pipeline
from hwnas.passes.quantize import quantizable, quantize_layers
from hwnas.tasks import load_task
from hwnas.tasks.evaluate import evaluate

from .graphs import Builder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FLOAT_OPS = ("Conv", "FusedConv", "Add", "MaxPool", "GlobalAveragePool", "AveragePool", "Gemm", "FusedGemm", "MatMul")
"""Float kernels that integer ones replace; none may be left in an int8 model."""


def _optimized_ops(model: onnx.ModelProto | str, path: Path) -> Counter[str]:
    """Op counts of onnxruntime's optimized graph (ORT_ENABLE_ALL), as written to `path`."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path)
    source = model if isinstance(model, str) else model.SerializeToString()
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(path).graph.node)


def _as_written(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # QDQ in float, as written
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _matches_torch(g: Graph, model: onnx.ModelProto, x: np.ndarray) -> None:
    """The emitted QDQ model computes what the torch fake-quant emission does: the grids
    added for readers of moved values round nothing."""
    with torch.no_grad():
        ref = to_torch(g)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_as_written(model, x), ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: dict[str, np.ndarray]) -> None:
        self.items = iter([feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def test_digits_cnn_int8_has_no_float_kernel_left(tmp_path: Path) -> None:
    """The fan-out after the stem's MaxPool (the block's first conv and the residual Add)
    used to stay float: MaxPool, Add and GlobalAveragePool ran in float between Q/DQ."""
    task = load_task("digits-cnn")
    base = PassRunner().run(parse_pipeline("canonicalize"), copy.deepcopy(task.graph)).graph
    train_x = task.train[0]
    calib = {task.input_name: train_x[np.sort(np.random.default_rng(0).permutation(len(train_x))[:256])]}
    g = copy.deepcopy(base)
    quantize_layers(g, {n.name: (8, 8) for n in g.nodes if quantizable(n)}, calib=calib)
    pool = next(n for n in g.nodes if n.op == "MaxPool").outputs[0]
    assert len(pool.uses) == 2 and pool in tensor_grids(g), "the pooled tensor fans out and gets a grid"
    model = to_qdq_onnx(g)
    ops = _optimized_ops(model, tmp_path / "hwnas_opt.onnx")
    assert not any(ops[k] for k in FLOAT_OPS), ops
    assert ops["QLinearConv"] == 5 and ops["QLinearAdd"] == 1 and ops["QGemm"] == 1, ops
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 0, ops  # integers from input to logits
    _matches_torch(g, model, task.test[0][:64])

    # onnxruntime's own quantizer on the same float model and calibration inputs does no better.
    src, dst = tmp_path / "fp32.onnx", tmp_path / "ort_int8.onnx"
    onnx.save(to_onnx(base), src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(src), str(dst), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    theirs = _optimized_ops(str(dst), tmp_path / "ort_opt.onnx")
    assert sum(theirs[k] for k in FLOAT_OPS) > 0  # what the comparison is about (onnxruntime 1.32: Conv, Add, MaxPool)
    assert ops["QuantizeLinear"] + ops["DequantizeLinear"] < theirs["QuantizeLinear"] + theirs["DequantizeLinear"]

    fp32 = evaluate(base, task, "test")
    assert evaluate(model, task, "test") >= fp32 - 0.01


def _pooled_residual(second_head: bool = False) -> Graph:
    """conv1 → ReLU → MaxPool, read by conv2 and by the Add after conv3; then GAP → Flatten
    → fc (and fc2 beside it with `second_head`)."""
    b = Builder(("N", 4, 16, 16), "pooled_residual")
    y = b.op("Relu", b.conv(b.x, 8, name="c1"), name="relu1")
    pool = b.op("MaxPool", y, name="pool", kernel_shape=Attr.ints([2, 2]), strides=Attr.ints([2, 2]))
    y = b.op("Relu", b.conv(pool, 8, name="c2"), name="relu2")
    y = b.op("Relu", b.op("Add", b.conv(y, 8, name="c3"), pool, name="add"), name="relu3")
    y = b.op("Flatten", b.op("GlobalAveragePool", b.conv(y, 8, name="c4"), name="gap"), name="flat")
    heads = (b.gemm(y, 4, name="fc"), b.gemm(y, 3, name="fc2")) if second_head else (b.gemm(y, 4, name="fc"),)
    g = b.done(*heads)
    layers = ("c1", "c2", "c3", "c4", "fc", "fc2") if second_head else ("c1", "c2", "c3", "c4", "fc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random calibration data, on purpose
        quantize_layers(g, dict.fromkeys(layers, (8, 8)), samples=8)
    return g


def test_a_pooled_tensor_read_by_a_conv_and_an_add_gets_one_pair(tmp_path: Path) -> None:
    g = _pooled_residual()
    c1, c2 = g.node_by_name("c1").ann.quant, g.node_by_name("c2").ann.quant
    assert (c2.a_scale, c2.a_zero_point) == (c1.o_scale, c1.o_zero_point), "conv2 reads the pooled grid"
    grids = tensor_grids(g)
    pool, gap = g.node_by_name("pool").outputs[0], g.node_by_name("gap").outputs[0]
    assert grids[pool] == (c1.o_scale, c1.o_zero_point)
    fc = g.node_by_name("fc").ann.quant
    assert grids[gap] == (fc.a_scale, fc.a_zero_point), "the pooling before Flatten takes fc's grid"
    model = to_qdq_onnx(g)
    quantized_pool = [p for p in model.graph.node if p.op_type == "QuantizeLinear" and p.input[0] == pool.name]
    assert len(quantized_pool) == 1, "one pair for both readers"
    _matches_torch(g, model, np.random.default_rng(4).standard_normal((2, 4, 16, 16)).astype(np.float32))
    ops = _optimized_ops(model, tmp_path / "opt.onnx")
    assert not any(ops[k] for k in FLOAT_OPS), ops
    assert ops["QLinearConv"] == 4 and ops["QLinearAdd"] == 1 and ops["QLinearGlobalAveragePool"] == 1, ops


def test_no_grid_where_a_reader_wants_float_or_another_grid() -> None:
    g = _pooled_residual()
    gap, flat = g.node_by_name("gap").outputs[0], g.node_by_name("flat").outputs[0]
    g.outputs.append(flat)  # a graph output reads the flattened pooling in float
    assert gap not in tensor_grids(g) and flat not in tensor_grids(g)

    g = _pooled_residual(second_head=True)
    gap = g.node_by_name("gap").outputs[0]
    fc, fc2 = g.node_by_name("fc").ann.quant, g.node_by_name("fc2")
    assert fc is not None and fc2.ann.quant == fc
    assert tensor_grids(g)[gap] == (fc.a_scale, fc.a_zero_point), "two readers on one grid share it"
    assert fc.a_scale is not None
    fc2.ann.quant = dataclasses.replace(fc, a_scale=fc.a_scale * 2)
    assert gap not in tensor_grids(g), "readers on two grids: the pooling is given neither"
