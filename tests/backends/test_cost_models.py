"""Cost models against hand-computed figures, and how annotations change cost."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from hwnas.backends.cost import Bound, estimate
from hwnas.backends.cost.analog import groups_per_tile, tiles_for
from hwnas.backends.cost.base import activation_size
from hwnas.backends.cost.liveness import best_order, peak_memory
from hwnas.backends.render import totals_lines
from hwnas.backends.target import MCU, TARGETS_DIR, Analog, Roofline, load_target
from hwnas.ir.annotations import Placement, QuantSpec, SparsitySpec
from hwnas.ir.text import print_graph
from hwnas.passes import PassRunner, parse_pipeline

from .graphs import Builder, conv_net

ALL = ["host-cpu", "cortex-a76", "cortex-m7", "jetson-orin", "h100", "zcu104", "analog-pcm"]


def fused(graph):  # noqa: ANN001, ANN201
    return PassRunner().run(parse_pipeline("fuse-activations"), graph).graph


def user_target(tmp_path: Path, name: str, **replace: str) -> Path:
    text = (TARGETS_DIR / f"{name}.toml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    p = tmp_path / f"{name}-edited.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("target", ALL)
def test_every_target_prices_every_node_and_is_pure(target: str) -> None:
    g = fused(conv_net())
    before = print_graph(g)
    r = estimate(g, target)
    assert print_graph(g) == before
    assert [c.node for c in r.nodes] == [n.name for n in g.nodes]
    assert not r.unpriced and r.latency_s > 0 and r.energy_j > 0 and r.peak_memory_bytes > 0
    assert all(c.latency_s is not None and c.latency_s >= 0 for c in r.nodes)
    assert r.node("flat").bound is Bound.FREE
    assert r.to_json()["latency_s"] == r.latency_s


def test_roofline_by_hand() -> None:
    t = load_target("host-cpu")
    hw = t.section(Roofline)
    b = Builder((1, 64, 56, 56))
    g = b.done(b.conv(b.x, 64, name="conv"))
    c = estimate(g, t).node("conv")
    macs = 56 * 56 * 64 * 64 * 9
    compute = (2 * macs + 56 * 56 * 64) / hw.peak_ops_per_s["fp32"]
    act = 2 * 64 * 56 * 56 * 4
    memory = act / hw.memory[1].bandwidth_bytes_per_s + 64 * 64 * 9 * 4 / hw.memory[0].bandwidth_bytes_per_s
    assert c.macs == macs and c.bound is Bound.COMPUTE
    assert c.latency_s == pytest.approx(max(compute, memory) + hw.kernel_overhead_s)

    b = Builder((1, 64, 224, 224))
    g = b.done(b.op("Add", b.x, b.x, name="add"))
    assert estimate(g, t).node("add").bound is Bound.MEMORY
    b = Builder((1, 4))
    g = b.done(b.op("Relu", b.x, name="relu"))
    assert estimate(g, t).node("relu").bound is Bound.OVERHEAD


def test_a_fused_activation_costs_no_kernel() -> None:
    plain, fusedg = conv_net(), fused(conv_net())
    a, b = estimate(plain, "cortex-a76"), estimate(fusedg, "cortex-a76")
    assert b.node("relu1").bound is Bound.FUSED and b.node("relu1").latency_s == 0
    assert "relu1" in b.node("conv1").note
    assert b.latency_s < a.latency_s


def test_prelu_on_onnxruntime_cpu_says_its_time_depends_on_the_signs() -> None:
    b = Builder((1, 8, 16, 16), "prelu")
    slope = b.g.add_constant(np.full((1, 8, 1, 1), 0.25, np.float32), "slope")
    g = b.done(b.op("PRelu", b.conv(b.x, 8), slope, name="act"))
    for cpu in ("epyc-zen5", "cortex-a76"):
        report = estimate(g, cpu)
        note = report.node("act").note
        assert "branches on each element's sign" in note and "data_dependence.py" in note, cpu
        assert report.data_dependent == {"PRelu": 1} and report.to_json()["data_dependent"] == {"PRelu": 1}
        assert "PRelu ×1: time depends on the input's values" in totals_lines(report)[-1]
    gpu = estimate(g, "h100")
    assert "sign" not in gpu.node("act").note and gpu.data_dependent == {}
    assert "sign" not in estimate(g, "epyc-zen5").node("conv").note


def _annotate(graph, **slots):  # noqa: ANN001, ANN003, ANN202
    for n in graph.nodes:
        if n.op in ("Conv", "Gemm"):
            for k, v in slots.items():
                setattr(n.ann, k, v)
    return graph


def test_fewer_bits_are_cheaper_where_the_datapath_exists() -> None:
    fp32 = estimate(conv_net(), "host-cpu")
    int8 = estimate(_annotate(conv_net(), quant=QuantSpec(w_bits=8, a_bits=8)), "host-cpu")
    assert int8.node("conv1").precision == "int8" and fp32.node("conv1").precision == "fp32"
    assert int8.node("conv1").latency_s < fp32.node("conv1").latency_s
    assert int8.weight_bytes == pytest.approx(fp32.weight_bytes / 4, rel=0.01)
    # cortex-a76 has no int4 datapath: int4 runs as int8 but its weights are half the bytes.
    a8 = estimate(_annotate(conv_net(), quant=QuantSpec(w_bits=8, a_bits=8)), "cortex-a76")
    a4 = estimate(_annotate(conv_net(), quant=QuantSpec(w_bits=4, a_bits=4)), "cortex-a76")
    assert a4.node("conv1").precision == "int8"
    assert a4.weight_bytes == pytest.approx(a8.weight_bytes / 2, rel=0.01)
    # On the FPGA, int4 multipliers leave the DSPs.
    f8 = estimate(_annotate(conv_net(), quant=QuantSpec(w_bits=8, a_bits=8)), "zcu104")
    f4 = estimate(_annotate(conv_net(), quant=QuantSpec(w_bits=4, a_bits=4)), "zcu104")
    assert f4.resources["DSP"].used < f8.resources["DSP"].used


def test_int8_biases_are_counted_as_the_int32_integer_kernels_add() -> None:
    calibrated = QuantSpec(w_bits=8, a_bits=8, a_scale=0.02, a_zero_point=128)
    r = estimate(_annotate(conv_net(hw=16, channels=8), quant=calibrated), "cortex-m7")
    weights, biases = 8 * 3 * 9 + 8 * 9 + 16 * 8 + 10 * 16, 8 + 8 + 16 + 10  # conv1, depthwise, pointwise, fc
    assert r.weight_bytes == weights + 4 * biases


def test_sparsity_helps_only_where_the_target_skips_zeros(tmp_path: Path) -> None:
    sparse = SparsitySpec(weight_sparsity=0.75)
    dense = estimate(conv_net(), "cortex-a76")
    assert estimate(_annotate(conv_net(), sparsity=sparse), "cortex-a76").latency_s == dense.latency_s
    skipping = user_target(tmp_path, "cortex-a76", **{'kind = "cpu"': 'kind = "cpu"\nskips_zeros = true'})
    a = estimate(conv_net(), skipping)
    b = estimate(_annotate(conv_net(), sparsity=sparse), skipping)
    assert b.node("conv1").macs == a.node("conv1").macs // 4
    assert b.latency_s < a.latency_s
    # Channel pruning (structured) lowers MACs everywhere.
    kept = estimate(_annotate(conv_net(), sparsity=SparsitySpec(structured=True, kept_channels=16)), "cortex-a76")
    assert kept.node("conv1").macs == dense.node("conv1").macs // 2


def test_mcu_cycles_flash_and_sram_by_hand() -> None:
    t = load_target("cortex-m7")
    hw = t.section(MCU)
    g = fused(conv_net(hw=16, channels=8))
    r = estimate(g, t)
    conv1 = r.node("conv1")
    assert conv1.resources["cycles"] == pytest.approx(16 * 16 * 8 * 27 / hw.macs_per_cycle["conv"]["fp32"]
                                                      + hw.layer_overhead_cycles)
    assert conv1.latency_s == pytest.approx(conv1.resources["cycles"] / hw.clock_hz)
    assert conv1.energy_j == pytest.approx(hw.active_w * conv1.latency_s)
    weights = 4 * (8 * 3 * 9 + 8 + 8 * 9 + 8 + 16 * 8 + 16 + 10 * 16 + 10)
    assert r.weight_bytes == weights
    kernels = 4  # Conv (conv), Conv (depthwise), GlobalAveragePool, Gemm
    assert r.resources["flash"].used == weights + hw.code_bytes_base + kernels * hw.code_bytes_per_kernel
    # Peak SRAM: the pointwise conv's 8-channel input and 16-channel output.
    assert r.extra["sram_activations_bytes"] == 4 * 16 * 16 * (8 + 16)
    assert r.fits


def test_a_model_too_big_for_the_mcu_says_why() -> None:
    r = estimate(conv_net(hw=224, channels=64), "cortex-m7")
    assert not r.fits
    assert any(reason.startswith("SRAM: needs") and "has 512.00 KiB" in reason for reason in r.does_not_fit)


def two_branches() -> Builder:
    """Two branches from x, each growing a big intermediate that shrinks again; the
    graph lists them interleaved, so both big intermediates are live at once."""
    b = Builder((1, 8, 32, 32), "branches")
    a1 = b.conv(b.x, 64, k=1, name="a1")
    c1 = b.conv(b.x, 64, k=1, name="c1")
    a2 = b.conv(a1, 4, k=1, name="a2")
    c2 = b.conv(c1, 4, k=1, name="c2")
    b.g.outputs = [b.op("Add", a2, c2, name="add")]
    return b


def test_order_search_lowers_peak_memory() -> None:
    g = two_branches().g
    given = peak_memory(g, activation_size)
    s = best_order(g, activation_size)
    assert s.exact and s.given_peak_bytes == given
    kib = 4 * 32 * 32
    assert given == kib * (8 + 64 + 64)  # x, a1 and c1 all live while c1 runs
    assert s.peak_bytes == kib * (8 + 64 + 4)  # a1 -> a2 first, then c1
    names = [n.name for n in s.order]
    assert names.index("a2") < names.index("c1")
    r = estimate(g, "cortex-m7")
    assert r.extra["sram_activations_bytes"] == s.peak_bytes and r.order == names


def test_element_wise_ops_run_in_place() -> None:
    b = Builder((1, 16, 32, 32))
    y = b.op("Sigmoid", b.op("Relu", b.x, name="relu"), name="sig")
    g = b.done(b.op("Tanh", y, name="tanh"))
    buffer = 4 * 16 * 32 * 32
    assert peak_memory(g, activation_size, in_place=False) == 2 * buffer  # each op's input and output
    assert peak_memory(g, activation_size) == buffer  # every op overwrites its input


def test_analog_tiles_by_hand() -> None:
    hw = load_target("analog-pcm").section(Analog)
    assert tiles_for(64 * 9, 300, 1, hw) == (3, 2, 6)
    b = Builder((1, 64, 8, 8))
    g = b.done(b.conv(b.x, 300, name="conv"))
    c = estimate(g, "analog-pcm").node("conv")
    assert c.resources["tiles"] == 6 and c.resources["mvms"] == 64
    slices = 1  # 8-bit PWM input, one read
    assert c.resources["adc_conversions"] == 64 * slices * 300 * 3
    assert c.resources["dac_conversions"] == 64 * slices * 576 * 2
    mvm = hw.dac_time_s + hw.array_time_s + 1 * hw.adc_time_s
    assert c.latency_s >= 64 * mvm


def test_analog_bit_serial_inputs_and_placement(tmp_path: Path) -> None:
    serial = user_target(tmp_path, "analog-pcm", **{
        "input_bits_per_slice = 8": "input_bits_per_slice = 1", "adcs_per_tile = 256": "adcs_per_tile = 32"})
    b = Builder((1, 64, 8, 8))
    g = b.done(b.conv(b.x, 128, name="conv"))
    full = estimate(g, serial).node("conv")
    g.nodes[0].ann.quant = QuantSpec(w_bits=8, a_bits=4)
    half = estimate(g, serial).node("conv")
    assert full.resources["input_slices"] == 8 and half.resources["input_slices"] == 4
    assert half.latency_s < full.latency_s and half.energy_j < full.energy_j
    g.nodes[0].ann.placement = Placement(target="analog-pcm", analog=False)
    digital = estimate(g, serial).node("conv")
    assert "tiles" not in digital.resources and digital.note.startswith("digital core")


def test_analog_model_needing_more_tiles_does_not_fit() -> None:
    # 1024 channels: conv1 4 tiles, depthwise ceil(1024 / 28) = 37, pointwise 4 x 8 = 32, fc 8.
    r = estimate(conv_net(channels=1024), "analog-pcm")
    assert r.resources["tiles"].used == 4 + 37 + 32 + 8
    assert any(reason.startswith("tiles: needs 81, has 64") for reason in r.does_not_fit)


def test_analog_packs_grouped_filters_block_diagonally(tmp_path: Path) -> None:
    hw = load_target("analog-pcm").section(Analog)  # 256 x 256 tiles
    assert groups_per_tile(9, 1, hw) == 28  # 3x3 depthwise: 28 blocks of 9 rows x 1 column
    assert tiles_for(9, 1, 32, hw) == (1, 1, 2)
    assert tiles_for(9, 1, 960, hw) == (1, 1, 35)  # ceil(960 / 28); one per channel was 960
    assert tiles_for(25, 1, 960, hw) == (1, 1, 96)  # 5x5: 10 per tile
    assert tiles_for(9, 2, 64, hw) == (1, 1, 3)  # channel multiplier 2: still 28 per tile
    assert tiles_for(4 * 9, 4, 8, hw) == (1, 1, 2)  # 4-channel groups: 7 per tile
    assert tiles_for(300, 4, 3, hw) == (2, 1, 6)  # a group larger than a tile is not packed
    assert tiles_for(64 * 9, 300, 1, hw) == (3, 2, 6)
    b = Builder((1, 64, 8, 8))
    g = b.done(b.conv(b.x, 64, group=64, name="dw"))
    c = estimate(g, "analog-pcm").node("dw")
    assert c.resources["tiles"] == 3 and "28 groups per tile" in c.note
    # Every channel's window still goes through its own DACs and its column through an ADC.
    assert c.resources["dac_conversions"] == 64 * 9 * 64 and c.resources["adc_conversions"] == 64 * 64
    # Packed columns share the ADCs: 28 columns in use over 4 ADCs is 7 conversions each.
    few = user_target(tmp_path, "analog-pcm", **{"adcs_per_tile = 256": "adcs_per_tile = 4"})
    serial = estimate(g, few).node("dw")
    a = load_target(few).section(Analog)
    assert serial.latency_s >= 64 * (a.dac_time_s + a.array_time_s + 7 * a.adc_time_s)


def test_fpga_reuse_factor_trades_latency_for_dsps(tmp_path: Path) -> None:
    g = conv_net(hw=16, channels=16)
    big = estimate(g, "zcu104")
    assert big.fits and big.extra["reuse_factor"] == 1
    small = user_target(tmp_path, "zcu104", **{"dsp = 1728": "dsp = 64"})
    r = estimate(g, small)
    assert r.fits and r.extra["reuse_factor"] > 1
    assert r.resources["DSP"].used <= 64 and r.latency_s > big.latency_s
    assert r.extra["initiation_interval_s"] == pytest.approx(
        max(c.resources["cycles"] for c in r.nodes if "cycles" in c.resources) / 2e8)
    # A fixed reuse factor whose dataflow design does not fit: "does not fit" in dataflow mode,
    # layer by layer in auto mode (the default).
    fixed = user_target(tmp_path, "zcu104", **{"dsp = 1728": "dsp = 64", 'reuse_factor = "auto"': "reuse_factor = 1"})
    r = estimate(g, fixed)
    assert r.mode == "layer-by-layer" and r.fits and r.resources["DSP"].used == 64
    dataflow = user_target(tmp_path, "zcu104", **{"dsp = 1728": "dsp = 64", 'reuse_factor = "auto"': "reuse_factor = 1",
                                                  'mode = "auto"': 'mode = "dataflow"'})
    r = estimate(g, dataflow)
    assert r.mode == "dataflow" and any(reason.startswith("DSP: needs") for reason in r.does_not_fit)


def test_unpriced_ops_are_listed_never_zero() -> None:
    b = Builder((1, 16))
    y = b.op("Relu", b.x, name="relu")
    node = b.g.add_node("MyOp", [y], name="custom", domain="com.example", output_names=["custom_y"])
    node.outputs[0].type = y.type
    g = b.done(node.outputs[0])
    for target in ("host-cpu", "cortex-m7", "zcu104", "analog-pcm"):
        r = estimate(g, target)
        assert r.unpriced == {"com.example::MyOp": 1}
        assert r.node("custom").latency_s is None and r.node("custom").bound is Bound.UNPRICED
        assert r.latency_s == pytest.approx(sum(c.latency_s for c in r.nodes if c.latency_s is not None)) \
            or target == "zcu104"


def test_light_models_price_on_every_target(light_model: str) -> None:
    from hwnas.frontends import load_graph

    g = PassRunner().run(parse_pipeline("canonicalize"), load_graph(light_model)).graph
    for target in ALL:
        r = estimate(g, target)
        assert math.isfinite(r.latency_s) and r.latency_s > 0 and not r.unpriced, target
    assert np.isfinite(r.energy_j)
    assert dataclasses.asdict(r.resources["tiles"])  # analog-pcm last
