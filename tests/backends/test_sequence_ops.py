"""Ops of sequence models and attention (LSTM, GRU, batched MatMul, Softmax, LayerNormalization,
Resize) are priced on every target kind: real torch modules and ONNX models, their MACs counted
by hand, and each target's figure for them checked against its own formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from hwnas.backends.cost import Bound, estimate
from hwnas.backends.cost.report import CostReport
from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.target import FPGA, MCU, load_target
from hwnas.compile import run_pipeline
from hwnas.frontends.onnx import import_onnx
from hwnas.frontends.torch import import_torch
from hwnas.ir.graph import Graph, Node
from hwnas.ir.registry import OpCounts, graph_weights, kernel_kind, op_counts, traits_of

from .test_cost_models import user_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TARGETS = ("host-cpu", "cortex-m7", "zcu104", "analog-pcm")
SEQUENCE_OPS = {"LSTM", "GRU", "MatMul", "Softmax", "LayerNormalization", "Resize"}


class _First(nn.Module):
    """A recurrent layer's output sequence (torch returns it with the final states)."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)


def _imported(module: nn.Module, x: torch.Tensor) -> Graph:
    """The module as `hwnas cost` prices it (imported, then its default pipeline), checked
    against torch in onnxruntime with its random weights."""
    torch.manual_seed(0)
    graph = run_pipeline(import_torch(module, x), "canonicalize").graph
    with torch.no_grad():
        want = module.eval()(x).numpy()
    sess = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {graph.inputs[0].name: x.numpy()})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return graph


def _counts(node: Node) -> OpCounts:
    counts = op_counts(node)
    assert counts is not None, f"{node.name} ({node.op}) is unpriced"
    return counts


def _nodes(graph: Graph, op: str) -> list[Node]:
    return [n for n in graph.nodes if n.op == op]


def _assert_priced(graph: Graph, ops: set[str]) -> dict[str, CostReport]:
    """Every target prices every node of `ops` with a positive latency, and no node is unpriced."""
    reports = {}
    for t in TARGETS:
        r = estimate(graph, t)
        assert not r.unpriced and not r.latency_is_lower_bound, (t, r.unpriced)
        for c in r.nodes:
            if c.op in ops:
                assert c.bound is not Bound.UNPRICED and c.latency_s is not None and c.latency_s > 0, (t, c)
        reports[t] = r
    return reports


# -- LSTM and GRU ------------------------------------------------------------------------------


def test_lstm_macs_weights_and_prices() -> None:
    graph = _imported(_First(nn.LSTM(8, 16, batch_first=True)), torch.randn(2, 5, 8))
    (lstm,) = _nodes(graph, "LSTM")
    counts = _counts(lstm)
    # 5 steps x batch 2, 4 gates x 16 units, each reading 8 inputs and 16 hidden values.
    assert counts.macs == 5 * 2 * 4 * 16 * (8 + 16) == 15_360
    # 2 per MAC, then per unit and step: 8 bias adds, 4 gate sums, 3 sigmoids (4 each),
    # 2 tanh (8 each), 4 for the cell and hidden state updates.
    assert counts.flops == 2 * 15_360 + 5 * 2 * 16 * (8 + 4 + 12 + 16 + 4)
    assert kernel_kind(lstm) == "gemm" and traits_of("LSTM").weight_inputs == (1, 2, 3, 7)
    params = 4 * 16 * 8 + 4 * 16 * 16 + 2 * 4 * 16  # W, R, both biases: torch's parameter count
    assert sum(v.type.numel() or 0 for v in graph_weights(graph).of(lstm) if v.type) == counts.params == params
    reports = _assert_priced(graph, SEQUENCE_OPS)
    assert reports["host-cpu"].node(lstm.name).bytes_moved >= 4 * params

    # MCU: the MACs at the gemm rate, the gate math at the element-wise rate, one layer overhead.
    hw = load_target("cortex-m7").section(MCU)
    gate_math = counts.flops - 2 * counts.macs
    cycles = (counts.macs / hw.macs_per_cycle["gemm"]["fp32"] + gate_math / hw.macs_per_cycle["elementwise"]["fp32"]
              + hw.layer_overhead_cycles)
    assert reports["cortex-m7"].node(lstm.name).latency_s == pytest.approx(cycles / hw.clock_hz)

    # FPGA dataflow: one step's MACs in multipliers over the reuse factor, one step per reuse factor cycles.
    c = reports["zcu104"].node(lstm.name)
    rf = c.resources["reuse_factor"]
    assert c.resources["cycles"] == 10 * rf
    fpga = load_target("zcu104").section(FPGA)
    assert c.resources["dsp"] == pytest.approx(-(-(4 * 16 * 24 // rf) // fpga.mults_per_dsp["int16"]), abs=1)

    # Analog: W (8 x 64) and R (16 x 64) each on a tile, one MVM through each per step.
    a = reports["analog-pcm"].node(lstm.name)
    assert "crossbar" in a.note and a.resources["tiles"] == 2 and a.resources["mvms"] == 2 * 10
    assert reports["analog-pcm"].extra["analog_layers"] == 1


def test_two_layer_bidirectional_lstm() -> None:
    graph = _imported(_First(nn.LSTM(8, 16, num_layers=2, bidirectional=True)), torch.randn(5, 2, 8))
    first, second = _nodes(graph, "LSTM")
    # Two directions; the second layer reads both directions' outputs (32 inputs).
    assert _counts(first).macs == 2 * 5 * 2 * 4 * 16 * (8 + 16)
    assert _counts(second).macs == 2 * 5 * 2 * 4 * 16 * (32 + 16)
    _assert_priced(graph, SEQUENCE_OPS)


def test_gru_macs_and_prices() -> None:
    graph = _imported(_First(nn.GRU(8, 16)), torch.randn(5, 2, 8))
    (gru,) = _nodes(graph, "GRU")
    counts = _counts(gru)
    assert kernel_kind(gru) == "gemm"
    assert counts.macs == 5 * 2 * 3 * 16 * (8 + 16) == 11_520
    # Per unit and step: 6 bias adds, 3 gate sums, 2 sigmoids, 1 tanh, 5 for r⊙(R·h) and the update.
    assert counts.flops == 2 * 11_520 + 5 * 2 * 16 * (6 + 3 + 8 + 8 + 5)
    assert counts.params == sum(p.numel() for p in nn.GRU(8, 16).parameters())
    reports = _assert_priced(graph, SEQUENCE_OPS)
    assert "crossbar" in reports["analog-pcm"].node(gru.name).note


def test_lstm_with_weights_given_at_run_time_runs_on_the_digital_core() -> None:
    # The ONNX node test's form: W, R and B are graph inputs, so no crossbar can hold them.
    x, w, r = (helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
               for n, s in (("X", [3, 1, 2]), ("W", [1, 12, 2]), ("R", [1, 12, 3])))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    node = helper.make_node("LSTM", ["X", "W", "R"], ["", "Y"], hidden_size=3)
    model = helper.make_model(helper.make_graph([node], "lstm", [x, w, r], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph = run_pipeline(import_onnx(model), "canonicalize").graph  # as `hwnas cost` prices it
    (lstm,) = graph.nodes
    assert _counts(lstm).macs == 3 * 1 * 4 * 3 * (2 + 3)  # Y_h only: same work
    r_analog = estimate(graph, "analog-pcm")
    assert r_analog.node(lstm.name).note.startswith("digital core") and not r_analog.unpriced
    assert not estimate(graph, "cortex-m7").unpriced


def test_lstm_runs_on_the_fpga_engine_layer_by_layer(tmp_path: Path) -> None:
    graph = _imported(_First(nn.LSTM(8, 16)), torch.randn(5, 2, 8))
    (lstm,) = _nodes(graph, "LSTM")
    target = user_target(tmp_path, "zcu104", **{'mode = "auto"': 'mode = "layer-by-layer"'})
    r = estimate(graph, target)
    c = r.node(lstm.name)
    assert r.mode == "layer-by-layer" and not r.unpriced
    assert "weights from DDR" in c.note and c.resources["cycles"] > 0
    assert c.resources["offchip_bytes"] >= 4 * 16 * 24 * 2  # W and R at 16-bit fixed point


# -- attention ---------------------------------------------------------------------------------


def test_transformer_encoder_layer_attention_is_priced() -> None:
    graph = _imported(_Encoder(), torch.randn(2, 5, 16))
    matmuls = [_counts(n) for n in _nodes(graph, "MatMul")]
    batched = [c for c in matmuls if c.params == 0]
    # Q·Kᵀ and attention·V: batch 2 x 2 heads, 5 x 5 scores over 8 dims each.
    assert [c.macs for c in batched] == [2 * 2 * 5 * 5 * 8] * 2
    (softmax,) = _nodes(graph, "Softmax")
    assert _counts(softmax).flops == 5 * 2 * 2 * 5 * 5
    norms = _nodes(graph, "LayerNormalization")
    assert len(norms) == 2 and all(_counts(n).flops == 8 * 2 * 5 * 16 for n in norms)
    reports = _assert_priced(graph, SEQUENCE_OPS)
    # FPGA: an output vector per row of each product: 10 tokens for the projections, batch 2 x
    # 2 heads x 5 query rows for Q·Kᵀ and attention·V.
    steps = sorted(reports["zcu104"].node(n.name).resources["cycles"] / reports["zcu104"].node(n.name).resources[
        "reuse_factor"] for n in _nodes(graph, "MatMul"))
    assert steps == [10, 10, 10, 20, 20]
    analog = reports["analog-pcm"]
    for n in _nodes(graph, "MatMul"):
        on_tiles = "crossbar" in analog.node(n.name).note
        assert on_tiles == (_counts(n).params > 0), n.name  # activations x activations: digital


# -- Resize ------------------------------------------------------------------------------------


def _resize_model(mode: str, scales: list[float]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    sc = numpy_helper.from_array(np.array(scales, np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode)
    model = helper.make_model(helper.make_graph([node], "resize", [x], [y], [sc]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(("mode", "scales", "per_output"), [
    ("nearest", [1, 1, 2, 2], 1),
    ("linear", [1, 1, 2, 2], 2 * 4),  # bilinear: 4 taps, a multiply and an add each
    ("cubic", [1, 1, 2, 2], 2 * 16),  # bicubic: 16 taps
    ("linear", [1, 1, 1, 2], 2 * 2),  # one resized axis: 2 taps
])
def test_resize_work_by_mode(mode: str, scales: list[float], per_output: int) -> None:
    model = _resize_model(mode, scales)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    graph = import_onnx(model)
    (resize,) = graph.nodes
    assert resize.outputs[0].type is not None and resize.outputs[0].type.shape == want.shape
    assert _counts(resize).flops == per_output * want.size
    assert kernel_kind(resize) == "movement"
    _assert_priced(graph, {"Resize"})


@pytest.mark.parametrize(("linear_before_reset", "mvms_per_step"), [(1, 2), (0, 3)])
def test_analog_gru_drives_r_twice_when_the_reset_gate_comes_first(linear_before_reset: int,
                                                                   mvms_per_step: int) -> None:
    # GRU's default (linear_before_reset=0) multiplies R by r⊙h: after the reset gate, a second MVM.
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W", (1, 48, 8)), ("R", (1, 48, 16)))]
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, 8])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    node = helper.make_node("GRU", ["X", "W", "R"], ["Y"], hidden_size=16, linear_before_reset=linear_before_reset)
    model = helper.make_model(helper.make_graph([node], "gru", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph = run_pipeline(import_onnx(model), "canonicalize").graph
    (gru,) = graph.nodes
    c = estimate(graph, "analog-pcm").node(gru.name)
    assert "crossbar" in c.note and c.resources["mvms"] == mvms_per_step * 10 and c.resources["tiles"] == 2
