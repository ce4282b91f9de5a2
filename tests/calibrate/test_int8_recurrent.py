"""Integer and recurrent kernels in the calibration: hwnas's own int8 QDQ emission and LSTM/GRU
layers measured in real onnxruntime sessions, then priced by their own kernel groups."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.cost import estimate
from hwnas.backends.cost.base import node_work
from hwnas.backends.emit.qdq import to_qdq_onnx
from hwnas.backends.target import load_target
from hwnas.calibrate import CalibrationError, calibrate, read_calibration, refit_few_shot
from hwnas.calibrate.features import featurize
from hwnas.calibrate.fusion import EDGE_OPS, integer, view_of
from hwnas.calibrate.kernels import INT8_FAMILIES, prepare, sample_spec
from hwnas.calibrate.store import kernel_features
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph
from hwnas.passes import PassRunner, parse_pipeline
from hwnas.passes.quantize import prepare_layers, quantize_layers
from tests.backends.graphs import Builder

# Kernels 0..99 of seed 0 hold 9 int8 convs (3 as hwnas's QDQ, 6 as onnxruntime's dynamic ConvInteger)
# and 5 recurrent layers (3 LSTM, 1 onnxruntime DynamicQuantizeLSTM, 1 GRU).
SAMPLES = 100
FAMILIES = ("conv_int8", "recurrent")


@pytest.fixture(scope="module")
def cal_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib-int8") / "host-cpu.json"
    calibrate("host-cpu", path, samples=SAMPLES, progress=False, repeats=12, families=FAMILIES, networks=0)
    return path


def canonical(graph: Graph) -> Graph:
    return PassRunner().run(parse_pipeline("canonicalize"), graph).graph


def int8_net(channels: int) -> Graph:
    """conv-relu, conv-relu, global pool, gemm, quantized as the `quantize` pass does (8 bits)."""
    b = Builder((1, 8, 16, 16), f"int8-{channels}")
    y = b.op("Relu", b.conv(b.x, channels, name="c1"), name="r1")
    y = b.op("Relu", b.conv(y, channels, name="c2"), name="r2")
    y = b.op("Flatten", b.op("GlobalAveragePool", y, name="gap"), name="flat")
    graph = canonical(b.done(b.gemm(y, 10, name="fc")))
    nodes, _ = prepare_layers(graph, "quantize")
    calib = {"x": np.random.default_rng(0).standard_normal((4, 8, 16, 16), dtype=np.float32)}
    quantize_layers(graph, {n.name: (8, 8) for n in nodes}, calib=calib)
    return graph


def lstm_graph(hidden: int, seq: int = 20, inputs: int = 64, op: str = "LSTM") -> Graph:
    rng = np.random.default_rng(0)
    gates = 4 if op == "LSTM" else 3
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.1).astype(np.float32), n) for n, s in (
        ("W", (1, gates * hidden, inputs)), ("R", (1, gates * hidden, hidden)), ("B", (1, 2 * gates * hidden)))]
    node = helper.make_node(op, ["x", "W", "R", "B"], ["y"], name="rnn", hidden_size=hidden)
    graph = helper.make_graph([node], "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, 1, inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return canonical(import_onnx(onnx.shape_inference.infer_shapes(model)))


def test_int8_and_recurrent_kernels_are_measured(cal_file: Path) -> None:
    samples = json.loads(cal_file.read_text())["samples"]
    by_group: dict[str, list[dict]] = {}
    for s in samples:
        by_group.setdefault(s["group"], []).append(s)
    assert set(by_group) == {"conv_int8", "conv_dynamic", "recurrent"}
    assert len(by_group["conv_int8"]) == 3 and len(by_group["conv_dynamic"]) == 6 and len(by_group["recurrent"]) == 5
    assert {s["op"] for s in by_group["conv_dynamic"]} == {"ConvInteger"} and all(
        s["edges"] == [] for s in by_group["conv_dynamic"])
    assert sorted(s["op"] for s in by_group["recurrent"]) == ["DynamicQuantizeLSTM", "GRU", "LSTM", "LSTM", "LSTM"]
    # The integer kernel alone is timed (one QLinearConv), not the Q/DQ and transposes around it.
    assert all(s["events"] == 1 and s["latency_s"] > 0 for s in samples)
    # ... which are timed as edges of their own: into uint8, to NHWC, back, and out of uint8.
    for s in by_group["conv_int8"]:
        assert sorted(e[0] for e in s["edges"]) == [0, 1, 2, 2] and all(e[3] > 0 for e in s["edges"])
    assert all(s["spec"] == sample_spec(0, s["index"]) for s in samples)


def test_kernel_model_runs_as_an_integer_kernel() -> None:
    """The calibration's int8 conv is hwnas's QDQ emission, which onnxruntime fuses into QLinearConv."""
    spec = next(sample_spec(0, i) for i in range(100) if sample_spec(0, i)["family"] == "conv_int8")
    graph, model = prepare(spec)
    main = next(n for n in graph.nodes if n.name.startswith("k_main"))
    assert integer(main) and main.ann.quant is not None and main.ann.quant.w_bits == 8
    ops = optimized_ops(model)
    assert ops.count("QLinearConv") == 1 and "Conv" not in ops
    # The edges the predictor charges to such a kernel are the ones onnxruntime runs around it.
    f = kernel_features(load_target("host-cpu"), graph)
    assert f is not None and f.group == "conv_int8"
    assert sorted(EDGE_OPS[e[0]] for e in f.edges) == sorted(
        op for op in ops if op in EDGE_OPS) == ["DequantizeLinear", "QuantizeLinear", "Transpose", "Transpose"]


def optimized_ops(model: onnx.ModelProto) -> list[str]:
    """The ops of onnxruntime's optimized graph of `model` (CPU provider, all optimizations)."""
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def test_predictor_prices_int8_conv_and_lstm_with_their_own_kinds(cal_file: Path) -> None:
    cal = read_calibration(cal_file)
    target = load_target("host-cpu")
    peaks = target.roofline.peak_ops_per_s
    prices = []
    for channels in (16, 64):
        graph = int8_net(channels)
        c2 = graph.node_by_name("c2")
        assert integer(c2)
        # onnxruntime runs the convs hwnas calls integer as QLinearConv.
        assert optimized_ops(to_qdq_onnx(graph)).count("QLinearConv") == sum(
            integer(n) for n in graph.nodes if n.op == "Conv") == 2
        base = cal.predict_base(node_work(c2, target, peaks, graph))
        assert base is not None and base[0] == "conv_int8"
        prices.append(base[1])
        # Edges where integers meet floats: c1 quantizes the float input (and goes NHWC); c2 reads
        # c1's grid, and the pooling after it runs on integers too (QLinearGlobalAveragePool, its
        # output on fc's grid), then QGemm writes float: no Dequantize at all.
        c1 = featurize(node_work(graph.node_by_name("c1"), target, peaks, graph))
        assert c1 is not None and c1.edges == ((0, 8 * 16 * 16, 16), (2, 8 * 16 * 16, 16))
        f2 = featurize(node_work(c2, target, peaks, graph))
        assert f2 is not None and f2.edges == ()
        ops = optimized_ops(to_qdq_onnx(graph))
        assert ops.count("QuantizeLinear") == 1 and "DequantizeLinear" not in ops
        report = estimate(graph, target, predictor=cal)
        cost = {c.node: c for c in report.nodes}
        assert "calibrated" in cost["c2"].note and cost["c2"].latency_s == pytest.approx(base[1])
        assert cost["r2"].latency_s == 0.0  # the Relu runs inside the QLinearConv
    assert prices[1] > prices[0] > 0  # four times the channels: a larger kernel, a higher price
    lstm = []
    for hidden in (32, 256):
        graph = lstm_graph(hidden)
        base = cal.predict_base(node_work(graph.node_by_name("rnn"), target, peaks, graph))
        assert base is not None and base[0] == "recurrent"
        lstm.append(base[1])
    assert lstm[1] > lstm[0] > 0


def test_relu_before_an_integer_conv_is_dropped() -> None:
    """A ReLU read only by a quantized conv (its grid starts at 0) is removed by onnxruntime."""
    b = Builder((1, 8, 16, 16), "pre-relu")
    y = b.op("Relu", b.conv(b.op("Relu", b.x, name="r0"), 16, name="c1"), name="r1")
    y = b.op("Relu", b.conv(y, 16, name="c2"), name="r2")
    graph = canonical(b.done(b.op("Sigmoid", y, name="out")))
    assert view_of(graph).roles.get(id(graph.node_by_name("r0"))) is not None  # float: a kernel of its own
    nodes, _ = prepare_layers(graph, "quantize")
    calib = {"x": np.random.default_rng(0).standard_normal((4, 8, 16, 16), dtype=np.float32)}
    quantize_layers(graph, {n.name: (8, 8) for n in nodes}, calib=calib)
    # The same graph object, now annotated: the cached analysis is redone.
    ops = optimized_ops(to_qdq_onnx(graph))
    assert "Relu" not in ops and ops.count("QLinearConv") == 2
    view = view_of(graph)
    assert all(view.roles.get(id(graph.node_by_name(r))) is None for r in ("r0", "r1", "r2"))


def test_uncalibrated_kind_falls_back_to_the_roofline(cal_file: Path) -> None:
    """The calibration has no float convs: a float conv is left to the roofline (None)."""
    cal = read_calibration(cal_file)
    target = load_target("host-cpu")
    graph = canonical(int8_net(16))
    for n in graph.nodes:
        n.ann.quant = None
    assert cal.predict(node_work(graph.node_by_name("c2"), target, target.roofline.peak_ops_per_s, graph)) is None


def test_few_shot_scales_the_new_kinds(cal_file: Path) -> None:
    cal = read_calibration(cal_file)
    target = load_target("host-cpu")
    graphs = [int8_net(32), lstm_graph(128), lstm_graph(32)]
    base = [estimate(g, target, predictor=cal).latency_s for g in graphs]
    slow = refit_few_shot(cal, graphs, [2 * b for b in base], "slow", target=target)
    assert {"conv_int8", "recurrent"} <= set(slow.settings["slow"].scales)
    # Two LSTM models of one kernel each but different sizes pin their group's scale (one left its
    # split with the per-kernel constant to the measurement noise).
    assert slow.settings["slow"].scales["recurrent"] > 1.2
    for g, b in zip(graphs, base, strict=True):
        assert estimate(g, target, predictor=slow).latency_s == pytest.approx(2 * b, rel=0.25)


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="unknown kernel family lstm"):
        calibrate("host-cpu", tmp_path / "c.json", samples=5, progress=False, families=("lstm",))
    assert not (tmp_path / "c.json").exists()
    assert set(INT8_FAMILIES) >= {"conv_int8", "depthwise_int8", "gemm_int8", "add_int8"}


def test_onnxruntime_dynamic_lstm_is_priced_as_the_lstm_it_quantizes(cal_file: Path, tmp_path: Path) -> None:
    """onnxruntime's `quantize_dynamic` turns an LSTM into com.microsoft::DynamicQuantizeLSTM (W and R
    int8 and transposed): hwnas infers its outputs as onnxruntime computes them, counts the float
    layer's work, prices what follows it, and featurizes it as a recurrent kernel of its own code."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hidden, seq, inputs = 48, 12, 40
    float_graph = lstm_graph(hidden, seq, inputs)
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.1).astype(np.float32), n) for n, s in (
        ("W", (2, 4 * hidden, inputs)), ("R", (2, 4 * hidden, hidden)), ("B", (2, 8 * hidden)))]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], name="rnn", hidden_size=hidden,
                              direction="bidirectional"),
             helper.make_node("Relu", ["y"], ["z"], name="after")]
    g = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, 1, inputs])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], initializer=inits)
    src, dst = tmp_path / "lstm.onnx", tmp_path / "lstm_int8.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])),
              src)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    quantized = onnx.load(dst)
    assert [n.op_type for n in quantized.graph.node if n.domain == "com.microsoft"] == ["DynamicQuantizeLSTM"]
    graph = canonical(import_onnx(quantized))
    rnn = next(n for n in graph.nodes if n.op == "DynamicQuantizeLSTM")
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": rng.standard_normal((seq, 1, inputs), dtype=np.float32)})
    assert rnn.outputs[0].type is not None and rnn.outputs[0].type.shape == out.shape == (seq, 2, 1, hidden)
    target = load_target("host-cpu")
    report = estimate(graph, target)
    assert not report.unpriced
    cost = {c.node: c for c in report.nodes}
    assert cost[rnn.name].latency_s > 0 and cost[next(n.name for n in graph.nodes if n.op == "Relu")].latency_s > 0
    # Two directions of the float layer's work (lstm_graph is one direction of the same sizes).
    work = node_work(rnn, target, target.roofline.peak_ops_per_s, graph)
    float_work = node_work(float_graph.node_by_name("rnn"), target, target.roofline.peak_ops_per_s, float_graph)
    assert work.macs == 2 * float_work.macs > 0
    f = featurize(work)
    assert f is not None and f.group == "recurrent" and f.values[0] == 3 and f.values[4] == hidden
    base = read_calibration(cal_file).predict_base(work)  # the calibration timed one such kernel
    assert base is not None and base[0] == "recurrent" and base[1] > 0


def test_prelu_kernels_are_calibrated_as_their_own_op() -> None:
    """PRelu (MTCNN, ArcFace-style nets) runs through onnxruntime's broadcasting loop, several times
    a LeakyRelu; the calibration builds it with a per-channel slope and features name its op."""
    from hwnas.calibrate.features import OP_CODES
    from hwnas.calibrate.timing import time_kernel

    spec = {"family": "elementwise", "op": "PRelu", "c": 16, "h": 24, "w": 24, "variant": "channel", "rank": 4}
    graph, model = prepare(spec)
    main = next(n for n in graph.nodes if n.name.startswith("k_main"))
    assert main.op == "PRelu" and main.input(1) is not None and main.input(1).type.shape == (16, 1, 1)
    target = load_target("host-cpu")
    f = featurize(node_work(main, target, target.roofline.peak_ops_per_s, graph))
    assert f is not None and f.group == "elementwise" and f.values[0] == OP_CODES["PRelu"]
    assert time_kernel(model, threads=1, warmup=1, repeats=3, budget_s=0.02).profiled_s > 0
    assert any(sample_spec(0, i).get("op") == "PRelu" for i in range(100))


def test_onnxruntime_dynamic_conv_is_priced_by_its_own_kernels(cal_file: Path, tmp_path: Path) -> None:
    """`quantize_dynamic` makes a conv a ConvInteger between DynamicQuantizeLinear and a rescale;
    the calibration times such kernels (the ConvInteger alone) and prices them by their own group,
    not as the float or QLinear conv of the same size."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    b = Builder((1, 32, 24, 24), "dynconv")
    src, dst = tmp_path / "conv.onnx", tmp_path / "conv_int8.onnx"
    onnx.save(to_qdq_onnx(canonical(b.done(b.op("Relu", b.conv(b.x, 64, name="c"), name="r")))), src)
    quantize_dynamic(src, dst, weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv"])
    graph = canonical(import_onnx(onnx.load(dst)))
    ops = [n.op for n in graph.nodes]
    assert "ConvInteger" in ops and "DynamicQuantizeLinear" in ops and "Conv" not in ops
    conv = next(n for n in graph.nodes if n.op == "ConvInteger")
    cal = read_calibration(cal_file)
    target = load_target("host-cpu")
    base = cal.predict_base(node_work(conv, target, target.roofline.peak_ops_per_s, graph))
    assert base is not None and base[0] == "conv_dynamic" and base[1] > 0
    report = estimate(graph, target, predictor=cal)
    assert not report.unpriced and "calibrated" in report.node(conv.name).note
