"""How a target runs what it is given: QDQ int8 on a GPU runtime that dequantizes, an FPGA's
layer-by-layer mode when the dataflow design does not fit, depthwise filters packed on crossbars."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from hwnas.backends.cost import Bound, estimate
from hwnas.backends.emit.qdq import to_qdq_onnx
from hwnas.backends.target import FPGA, Analog, Roofline, load_target
from hwnas.ir.annotations import QuantSpec
from hwnas.ir.graph import Graph
from hwnas.passes import PassRunner, parse_pipeline

from .graphs import Builder, conv_net
from .test_cost_models import user_target

INT8 = QuantSpec(w_bits=8, a_bits=8, a_scale=0.05, a_zero_point=128)


def quantized(graph: Graph, q: QuantSpec = INT8) -> Graph:
    for n in graph.nodes:
        if n.op in ("Conv", "Gemm"):
            n.ann.quant = q
    return graph


def one_conv(shape: tuple[int, int, int, int] = (1, 64, 56, 56), cout: int = 64) -> Graph:
    b = Builder(shape)
    return b.done(b.conv(b.x, cout, name="conv"))


# -- GPU: onnxruntime's CUDA EP runs QDQ nodes in float --------------------------------------

def test_gpu_targets_name_their_runtime() -> None:
    for name in ("h100", "jetson-orin"):
        hw = load_target(name).section(Roofline)
        assert hw.execution_provider == "CUDAExecutionProvider" and hw.qdq == "dequantize"
    assert load_target("cortex-a76").section(Roofline).qdq == "integer"


def test_gpu_prices_a_qdq_conv_as_float_plus_its_q_dq_kernels() -> None:
    t = load_target("h100")
    hw = t.section(Roofline)
    float_conv = estimate(one_conv(), t).node("conv")
    c = estimate(quantized(one_conv()), t).node("conv")
    assert c.precision == "fp32" and "CUDAExecutionProvider" in c.note and "+4 Q/DQ kernels" in c.note
    # By hand: the float conv, then four kernels, each one launch plus its bytes from SMEM (the
    # level that holds them): Q and DQ of the input (4 + 1 bytes per element each), DQ of the
    # int8 weights (1 + 4) and of the int32 bias (4 + 4).
    n, n_w, n_b = 64 * 56 * 56, 64 * 64 * 9, 64
    smem = hw.memory[0].bandwidth_bytes_per_s
    kernels = 4 * hw.kernel_overhead_s + (5 * n + 5 * n + 5 * n_w + 8 * n_b) / smem
    assert c.latency_s == pytest.approx(float_conv.latency_s + kernels)
    assert c.latency_s > float_conv.latency_s  # int8 QDQ is slower than float on this runtime


def test_gpu_q_dq_kernels_are_the_emitted_models_nodes() -> None:
    g = quantized(conv_net())
    r = estimate(g, "h100")
    priced = sum(int(m.group(1)) for c in r.nodes for m in [re.search(r"\+(\d+) Q/DQ kernels", c.note)] if m)
    emitted = [p.op_type for p in to_qdq_onnx(g).graph.node if p.op_type in ("QuantizeLinear", "DequantizeLinear")]
    # conv1, dw, pw, fc: input Q and DQ, weight DQ, bias DQ each; GlobalAveragePool's output on fc's grid
    # (Flatten carries it to fc, whose own pair it is)
    assert priced == len(emitted) == 18
    assert r.latency_s > estimate(conv_net(), "h100").latency_s
    # Two convs reading x on the same grid share one Q/DQ pair in the emitted model.
    b = Builder((1, 16, 8, 8))
    g2 = quantized(b.done(b.conv(b.x, 8, name="left"), b.conv(b.x, 8, name="right")))
    r2 = estimate(g2, "h100")
    priced = sum(int(m.group(1)) for c in r2.nodes for m in [re.search(r"\+(\d+) Q/DQ kernels", c.note)] if m)
    emitted = [p.op_type for p in to_qdq_onnx(g2).graph.node if p.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert priced == len(emitted) == 2 + 2 * 2
    # A 4-bit data input is fake-quantized in float: Mul, Round, Clip, Mul.
    g4 = quantized(one_conv(), QuantSpec(w_bits=4, a_bits=4, a_scale=0.1, a_zero_point=8))
    assert "+5 Q/DQ kernels" in estimate(g4, "h100").node("conv").note


def test_a_tensorrt_target_runs_qdq_on_int8_kernels(tmp_path: Path) -> None:
    trt = user_target(tmp_path, "h100", **{'execution_provider = "CUDAExecutionProvider"':
                                           'execution_provider = "TensorrtExecutionProvider"',
                                           'qdq = "dequantize"': 'qdq = "integer"'})
    c = estimate(quantized(one_conv()), trt).node("conv")
    assert c.precision == "int8" and "Q/DQ" not in c.note
    assert c.latency_s < estimate(one_conv(), trt).node("conv").latency_s


# -- FPGA: layer by layer, weights from DDR ---------------------------------------------------

def layer_target(tmp_path: Path, **replace: str) -> Path:
    return user_target(tmp_path, "zcu104", **{'mode = "auto"': 'mode = "layer-by-layer"'}, **replace)


def test_fpga_layer_by_layer_by_hand(tmp_path: Path) -> None:
    g = one_conv((1, 64, 32, 32))
    macs = 32 * 32 * 64 * 64 * 9
    weights = (64 * 64 * 9 + 64) * 2  # int16 fixed point, the design's float precision
    acts = 2 * 64 * 32 * 32 * 2  # input and output at int16
    target = layer_target(tmp_path)
    hw = load_target(target).section(FPGA)
    r = estimate(g, target)
    c = r.node("conv")
    assert r.mode == "layer-by-layer" and r.fits and r.to_json()["mode"] == "layer-by-layer"
    # 1,728 DSP slices, one int16 product each; their LUT glue (20 each) fits.
    assert r.extra["engine_multipliers"] == 1728 and r.resources["DSP"].used == 1728
    assert c.resources["cycles"] == math.ceil(macs / 1728)
    assert c.resources["offchip_bytes"] == weights  # activations stay in BRAM
    assert c.latency_s == pytest.approx(math.ceil(macs / 1728) / hw.clock_hz) and c.bound is Bound.COMPUTE
    assert r.latency_s == pytest.approx(c.latency_s)

    slow = estimate(g, layer_target(tmp_path, **{"offchip_bandwidth_bytes_per_s = 1.92e10":
                                                 "offchip_bandwidth_bytes_per_s = 1.0e6"})).node("conv")
    assert slow.bound is Bound.MEMORY and slow.latency_s == pytest.approx(weights / 1e6)

    # 16 BRAM18: 3 for the weight tiles (2 x 1,728 x 16 bits), the rest too small for 256 KiB
    # of activations, which go through DDR; the line buffer (2 rows x 32 x 64 x 16 bits) takes 4.
    small = estimate(g, layer_target(tmp_path, **{"bram_18k = 624": "bram_18k = 16"}))
    assert small.fits and small.resources["BRAM18K"].used == 3 + 4
    assert small.node("conv").resources["offchip_bytes"] == weights + acts
    assert "activations through DDR" in small.node("conv").note


def test_fpga_keeps_does_not_fit_where_layer_by_layer_cannot_run(tmp_path: Path) -> None:
    g = one_conv((1, 64, 32, 32))
    r = estimate(g, layer_target(tmp_path, **{"bram_18k = 624": "bram_18k = 6"}))
    assert r.does_not_fit == ["BRAM18K: needs 7, has 6"]
    auto = user_target(tmp_path, "zcu104", **{"bram_18k = 624": "bram_18k = 6"})
    r = estimate(g, auto)
    assert r.mode == "dataflow" and not r.fits  # neither design runs: the dataflow one is reported
    no_ddr = estimate(g, layer_target(tmp_path, **{"offchip_bandwidth_bytes_per_s = 1.92e10":
                                                   "offchip_bandwidth_bytes_per_s = 0.0"}))
    assert not no_ddr.fits and "offchip_bandwidth_bytes_per_s is 0" in no_ddr.does_not_fit[0]


@pytest.fixture(scope="module")
def mobilenetv2() -> Graph:
    from hwnas.search.spaces import mobilenetv2, to_graph

    graph = to_graph(mobilenetv2.build(), (1, 3, 224, 224), "mobilenetv2")
    return PassRunner().run(parse_pipeline("canonicalize"), graph).graph


def test_mid_size_nets_get_a_layer_by_layer_latency(tmp_path: Path, mobilenetv2: Graph,
                                                    light_model_paths: dict[str, str]) -> None:
    from hwnas.frontends import load_graph

    resnet = PassRunner().run(parse_pipeline("canonicalize"), load_graph(light_model_paths["resnet50"])).graph
    dataflow = user_target(tmp_path, "zcu104", **{'mode = "auto"': 'mode = "dataflow"'})
    for g in (mobilenetv2, resnet):
        assert not estimate(g, dataflow).fits  # the dataflow design alone: "does not fit"
        r = estimate(g, "zcu104")
        assert r.mode == "layer-by-layer" and r.fits and math.isfinite(r.latency_s)
        # Every weight crosses DDR once, at int16 (half the IR's fp32 bytes); each layer takes
        # its compute time or its DDR time, whichever is longer.
        assert r.extra["offchip_bytes"] >= r.weight_bytes / 2
        cycles = sum(c.resources["cycles"] for c in r.nodes if "cycles" in c.resources)
        assert r.latency_s >= max(cycles / 2e8, r.extra["offchip_bytes"] / 1.92e10)
    # ResNet-50's 4.1 GMACs on 1,728 multipliers at 200 MHz take at least 11.8 ms.
    assert estimate(resnet, "zcu104").latency_s > 4.0e9 / 1728 / 2e8


def test_a_tiny_net_keeps_the_dataflow_design() -> None:
    r = estimate(conv_net(hw=16, channels=16), "zcu104")
    assert r.mode == "dataflow" and r.fits and r.extra["reuse_factor"] == 1
    assert r.latency_s == pytest.approx(5.48e-06)  # the figure before layer-by-layer existed


# -- analog: depthwise filters block-diagonally ------------------------------------------------

def test_mobilenetv2_depthwise_layers_share_tiles(mobilenetv2: Graph) -> None:
    hw = load_target("analog-pcm").section(Analog)
    r = estimate(mobilenetv2, "analog-pcm")
    depthwise = [n for n in mobilenetv2.nodes if n.op == "Conv" and n.attr_int("group", 1) > 1]
    assert len(depthwise) == 17
    for n in depthwise:
        channels = n.attr_int("group", 1)
        assert r.node(n.name).resources["tiles"] == math.ceil(channels / (hw.tile_rows // 9))
    # One tile per channel before: 7,242 tiles, 7,136 of them depthwise; now 263 depthwise.
    assert sum(n.attr_int("group", 1) for n in depthwise) == 7136
    assert sum(r.node(n.name).resources["tiles"] for n in depthwise) == 263
    assert r.resources["tiles"].used == 7242 - 7136 + 263 == 369
