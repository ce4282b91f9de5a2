"""fold-qdq: a QDQ model's Q/DQ become quantization annotations, so a QDQ file hwnas wrote
prices as the graph it was written from, and onnxruntime's quantize_static models price as
int8; emitting the result writes the same QDQ model again."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.backends.cost import estimate
from hwnas.backends.emit import emit_onnx
from hwnas.backends.emit.qdq import to_qdq_onnx
from hwnas.backends.target import load_target
from hwnas.calibrate import load_calibration
from hwnas.cli import main
from hwnas.compile import compile, price, run_pipeline
from hwnas.frontends.onnx import import_onnx, load_model
from hwnas.ir.graph import Graph
from hwnas.passes.fold_qdq import FoldQdq, pair_skip_reason, weight_skip_reason
from hwnas.passes.quantize import prepare_layers, quantize_layers
from hwnas.passes.testing import SEED, assert_outputs_close, build_model, fires, node_lines, randn, run_model, unchanged
from hwnas.search.spaces.mobilenetv2 import MBConfig, build_ir

EXAMPLE = Path(__file__).parents[2] / "examples" / "small_cnn.onnx"
QDQ = ("QuantizeLinear", "DequantizeLinear")


def _qdq(x: str, scale: float, zp: int, dtype: int = TensorProto.UINT8) -> tuple[list[onnx.NodeProto], dict]:
    """x through a Q/DQ pair on (scale, zp); the nodes and their constants."""
    np_type = {TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8}[dtype]
    consts = {f"{x}_s": np.array(scale, np.float32), f"{x}_z": np.array(zp, np_type)}
    nodes = [helper.make_node("QuantizeLinear", [x, f"{x}_s", f"{x}_z"], [f"{x}_q"], name=f"{x}_Q"),
             helper.make_node("DequantizeLinear", [f"{x}_q", f"{x}_s", f"{x}_z"], [f"{x}_dq"], name=f"{x}_DQ")]
    return nodes, consts


def hand_qdq_model() -> onnx.ModelProto:
    """x -Q/DQ-> conv1 (int8 weight, int32 bias) -> Relu -Q/DQ-> conv2 (4-bit weights in
    int8) -Q/DQ-> y: the last pair is a graph output's and stays."""
    rng = np.random.default_rng(SEED)
    nodes, consts = _qdq("x", 0.05, 128)
    n2, c2 = _qdq("r", 0.02, 0)
    n3, c3 = _qdq("c2", 0.1, 120)
    w1 = rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8)
    w1[0, 0, 0, 0] = 127
    w2 = rng.integers(-7, 8, (2, 4, 1, 1)).astype(np.int8)
    w2[1, 1, 0, 0] = -7
    weights = {"w1_q": w1, "w1_s": np.full(4, 0.01, np.float32) * np.arange(1, 5, dtype=np.float32),
               "w1_z": np.zeros(4, np.int8), "b1_q": rng.integers(-500, 500, 4).astype(np.int32),
               "b1_s": np.full(4, 0.0005, np.float32), "b1_z": np.zeros(4, np.int32),
               "w2_q": w2, "w2_s": np.array(0.03, np.float32), "w2_z": np.array(0, np.int8), **consts, **c2, **c3}
    nodes += [
        helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_z"], ["w1_dq"], name="w1_DQ", axis=0),
        helper.make_node("DequantizeLinear", ["b1_q", "b1_s", "b1_z"], ["b1_dq"], name="b1_DQ", axis=0),
        helper.make_node("Conv", ["x_dq", "w1_dq", "b1_dq"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r"], name="relu"),
        *n2,
        helper.make_node("DequantizeLinear", ["w2_q", "w2_s", "w2_z"], ["w2_dq"], name="w2_DQ"),
        helper.make_node("Conv", ["r_dq", "w2_dq"], ["c2"], name="conv2"),
        *n3,
    ]
    return build_model(nodes, {"x": [1, 3, 4, 4]}, ["c2_dq"], weights)


def test_golden() -> None:
    result = fires(hand_qdq_model(), FoldQdq())
    assert node_lines(result.graph) == """\
  %c1: f32[1,4,4,4] = Conv(%x, %w1, %b1) @conv1 #{"quant": {"a_bits": 8, "a_scale": 0.05000000074505806, \
"a_zero_point": 128, "method": "minmax", "o_scale": 0.019999999552965164, "o_zero_point": 0, "symmetric": true, \
"w_bits": 8, "w_granularity": "per-channel"}}
  %r: f32[1,4,4,4] = Relu(%c1) @relu
  %c2: f32[1,2,4,4] = Conv(%r, %w2) @conv2 #{"quant": {"a_bits": 8, "a_scale": 0.019999999552965164, \
"a_zero_point": 0, "method": "minmax", "o_scale": null, "o_zero_point": null, "symmetric": true, "w_bits": 4, \
"w_granularity": "per-tensor"}}
  %c2_q: u8[1,2,4,4] = QuantizeLinear(%c2, %c2_s, %c2_z) @c2_Q
  %c2_dq: f32[1,2,4,4] = DequantizeLinear(%c2_q, %c2_s, %c2_z) @c2_DQ
"""
    w1 = result.graph.node_by_name("conv1").operand(1).const
    model = hand_qdq_model()
    ints = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w1_q"))
    scales = np.arange(1, 5, dtype=np.float32) * np.float32(0.01)
    np.testing.assert_array_equal(w1, ints.astype(np.float32) * scales[:, None, None, None])


def test_numeric_hand_model_is_written_back_exactly() -> None:
    model = hand_qdq_model()
    graph = FoldQdq().run(import_onnx(model)).graph
    feeds = {"x": randn(np.random.default_rng(1), 1, 3, 4, 4)}
    assert_outputs_close(run_model(model, feeds), run_model(emit_onnx(graph), feeds), 0)


def _mobilenet_qdq() -> tuple[Graph, onnx.ModelProto]:
    """A MobileNetV2-like net (residual Adds, ReLU6, depthwise) quantized by hwnas, and its QDQ file."""
    graph = run_pipeline(build_ir(MBConfig(width=0.35, resolution=32, num_classes=10), seed=0), "canonicalize").graph
    calib = {graph.inputs[0].name: np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)}
    nodes, _ = prepare_layers(graph, "quantize")
    quantize_layers(graph, {n.name: (8, 8) for n in nodes}, calib=calib)
    return graph, to_qdq_onnx(graph)


def test_hwnas_qdq_file_folds_to_the_graph_it_was_written_from() -> None:
    graph, model = _mobilenet_qdq()
    folded = fires(model, FoldQdq()).graph
    assert not [n.op for n in folded.nodes if n.op in QDQ]  # every pair and weight DQ is an annotation again
    want = {n.name: n.ann.quant for n in graph.nodes}
    got = {n.name: n.ann.quant for n in folded.nodes}
    assert got == want and sum(q is not None and q.w_bits is None for q in got.values()) >= 3  # the residual Adds
    # Emitted again, it is the same model: onnxruntime gives bit-equal outputs.
    feeds = {graph.inputs[0].name: np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)}
    assert_outputs_close(run_model(model, feeds), run_model(emit_onnx(folded), feeds), 0)


@pytest.mark.parametrize("target", ["cortex-m7", "host-cpu"])
def test_written_artifact_prices_as_the_compile_report(target: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random calibration
        compiled = compile(import_onnx(load_model(EXAMPLE)), "cortex-m7", allow_random_calib=True)
    reread = run_pipeline(import_onnx(onnx.load_from_string(compiled.artifact)), "canonicalize").graph
    t = load_target(target)
    # Analytical, and with this machine's calibration when it has one (read once: it may be rewritten).
    calibration = load_calibration(t)
    for predictor in (None,) if calibration is None else (None, calibration):
        before, after = estimate(compiled.graph, t, predictor), estimate(reread, t, predictor)
        assert math.isclose(after.latency_s, before.latency_s, rel_tol=1e-9, abs_tol=0)
        assert math.isclose(after.energy_j, before.energy_j, rel_tol=1e-9, abs_tol=0)
        assert (after.peak_memory_bytes, after.weight_bytes) == (before.peak_memory_bytes, before.weight_bytes)
        assert {c.node: c.precision for c in after.nodes} == {c.node: c.precision for c in before.nodes}


def test_cost_command_prices_the_compiled_file_as_compile_did(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small_cnn.onnx"  # what scripts/setup.sh does: compile, then cost the file
    assert main(["compile", str(EXAMPLE), "--target", "cortex-m7", "-o", str(out), "--allow-random-calib"]) == 0
    capsys.readouterr()
    assert main(["cost", str(out), "-t", "cortex-m7", "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)["targets"]["cortex-m7"]
    written = json.loads((tmp_path / "small_cnn.cost.json").read_text())
    assert math.isclose(priced["latency_s"], written["latency_s"], rel_tol=1e-9)
    assert priced["peak_memory_bytes"] == written["peak_memory_bytes"]


def _ort_model(tmp_path: Path, per_channel: bool) -> Path:
    """The bundled example through onnxruntime's own pre-processing and quantize_static (QDQ, int8)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.data = iter([{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.data, None)

    pre, out = tmp_path / "pre.onnx", tmp_path / f"qdq_{per_channel}.onnx"
    if not pre.exists():
        quant_pre_process(str(EXAMPLE), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel)
    return out


@pytest.mark.parametrize("per_channel", [True, False])
def test_onnxruntime_quantize_static_model_prices_as_int8(tmp_path: Path, per_channel: bool) -> None:
    path = _ort_model(tmp_path, per_channel)
    graph = run_pipeline(import_onnx(load_model(path)), "canonicalize").graph
    layers = [n for n in graph.nodes if n.op in ("Conv", "Gemm")]
    assert len(layers) == 4
    for n in layers:
        q = n.ann.quant
        assert q is not None and (q.w_bits, q.a_bits) == (8, 8), n.name
        assert q.w_granularity.value == ("per-channel" if per_channel else "per-tensor")
    report = price(graph, load_target("cortex-m7")).report
    assert all(c.precision == "int8" for c in report.nodes if c.node in {n.name for n in layers})
    # What stays: the logits' pair (a graph output) and the pairs around the decomposed HardSwish's
    # HardSigmoid and Mul, float readers no annotation gives a grid.
    left = {n.name for n in graph.nodes if n.op == "QuantizeLinear"}
    assert "logits_QuantizeLinear" in left and len(left) == 3
    float_graph = run_pipeline(import_onnx(load_model(EXAMPLE)), "canonicalize").graph
    float_report = price(float_graph, load_target("cortex-m7")).report
    assert report.latency_s < 0.6 * float_report.latency_s


# -- negative ------------------------------------------------------------------------------


def test_float_model_is_left_alone() -> None:
    unchanged(import_onnx(onnx.load(EXAMPLE)), FoldQdq())


def test_pairs_a_float_op_reads_or_a_graph_output_holds_stay() -> None:
    nodes, consts = _qdq("x", 0.05, 3)
    n2, c2 = _qdq("s", 0.01, 0, TensorProto.INT8)
    nodes += [helper.make_node("Sigmoid", ["x_dq"], ["s"], name="sigmoid"), *n2,
              helper.make_node("Identity", ["s_q"], ["raw"], name="copy")]
    model = build_model(nodes, {"x": [2, 3]}, ["raw"], {**consts, **c2})
    graph = import_onnx(model)
    unchanged(graph, FoldQdq())  # the Sigmoid is not an integer kernel: its input's pair stays
    q = {n.name: n for n in graph.nodes}
    assert pair_skip_reason(q["x_Q"]) is None  # a foldable pair that no annotation gives back
    assert pair_skip_reason(q["s_Q"]) == "its quantized tensor is read by Identity 'copy', not a DequantizeLinear " \
                                         "on its grid"


def test_weight_dequantize_read_by_a_float_op_stays() -> None:
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"], name="w_DQ"),
             helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    weights = {"w_q": np.ones((2, 3), np.int8), "w_s": np.array(0.5, np.float32)}
    model = build_model(nodes, {"x": [2, 3]}, ["y"], weights)
    graph = import_onnx(model)
    unchanged(graph, FoldQdq())
    reason = weight_skip_reason(graph.node_by_name("w_DQ"))
    assert reason == "Add 'add' reads it as input 1, not a layer's weight or bias"
