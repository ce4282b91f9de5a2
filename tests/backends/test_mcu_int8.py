"""MCU peak SRAM of int8 networks: every tensor at the width it is stored in, and the
schedule a C backend plans its arena over (order, buffers, lifetimes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwnas.backends.cost import estimate
from hwnas.backends.cost.liveness import best_order
from hwnas.backends.cost.mcu import schedule, scratch_bytes, tensor_storage
from hwnas.compile import run_pipeline
from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph, Value
from hwnas.ir.registry import refresh_types
from hwnas.ir.types import DType
from tests.backends.graphs import Builder


def relu6(b: Builder, x: Value, name: str) -> Value:
    lo, hi = b.g.add_constant(np.float32(0.0), "lo"), b.g.add_constant(np.float32(6.0), "hi")
    return b.op("Clip", x, lo, hi, name=name)


def mobilenet_like() -> Graph:
    """3x16x16 -> conv 3x3/2 (8) -> inverted residual (8 -> 24 -> 8, + skip) -> inverted
    block with stride 2 (8 -> 32 -> 16) -> MaxPool 2 -> GlobalAveragePool -> Flatten -> Gemm 10;
    every conv but the projections followed by ReLU6, as MobileNetV2 is built."""
    b = Builder((1, 3, 16, 16), "mbv2-like")
    x = relu6(b, b.conv(b.x, 8, stride=2, name="stem"), "stem_act")
    e = relu6(b, b.conv(x, 24, k=1, name="b1_expand"), "b1_expand_act")
    d = relu6(b, b.conv(e, 24, group=24, name="b1_dw"), "b1_dw_act")
    x = b.op("Add", b.conv(d, 8, k=1, name="b1_project"), x, name="b1_add")
    e = relu6(b, b.conv(x, 32, k=1, name="b2_expand"), "b2_expand_act")
    d = relu6(b, b.conv(e, 32, stride=2, group=32, name="b2_dw"), "b2_dw_act")
    y = b.conv(d, 16, k=1, name="b2_project")
    y = b.op("MaxPool", y, name="pool", kernel_shape=Attr.ints([2, 2]), strides=Attr.ints([2, 2]))
    y = b.op("Flatten", b.op("GlobalAveragePool", y, name="gap"), name="flat")
    return b.done(b.gemm(y, 10, name="fc"))


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    calib = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(calib, x=np.random.default_rng(3).standard_normal((16, 3, 16, 16)).astype(np.float32))
    return run_pipeline(mobilenet_like(), "canonicalize,quantize", calib=str(calib)).graph


def test_every_activation_of_an_int8_network_is_one_byte(int8: Graph) -> None:
    storage = tensor_storage(int8)
    wide = {v.name for v, s in storage.items() if s.nbytes != v.type.numel()}
    assert wide == {"fc_y"}  # only the logits stay float (the graph output has no grid)
    assert storage[int8.outputs[0]].dtype is DType.FLOAT and storage[int8.outputs[0]].nbytes == 40
    for name in ("x", "stem_act_y", "b1_add_y", "pool_y", "gap_y", "flat_y"):  # input, fused ReLU6, Add, pools, view
        s = next(s for v, s in storage.items() if v.name == name)
        assert s.dtype is DType.UINT8 and s.quantized and s.scale > 0 and 0 <= s.zero_point <= 255, name


def test_int8_peak_equals_the_largest_live_set_by_hand(int8: Graph) -> None:
    # While b1_dw runs, the block's input (kept for the skip Add), the expansion and the
    # depthwise output are live: 8x8x8 + 24x8x8 + 24x8x8 bytes. Every other step needs less:
    # stem 768 + 512, b1_project 512 + 1536 + 512, b2_expand 512 + 2048, b2_dw 2048 + 512.
    by_hand = 8 * 8 * 8 + 24 * 8 * 8 + 24 * 8 * 8
    plan = schedule(int8)
    assert plan.exact and plan.peak_bytes == by_hand == 3584
    step = [n.name for n in plan.order].index("b1_dw")
    assert plan.live_bytes(step) == by_hand
    assert max(plan.live_bytes(i) for i in range(len(plan.order))) == plan.peak_bytes
    # The report adds the largest im2col buffer: b2_project's 32 x 1 x 1 inputs, two int16 columns.
    report = estimate(int8, "cortex-m7")
    assert max(scratch_bytes(n) for n in int8.nodes) == 2 * 32 * 2
    assert report.resources["SRAM"].used == report.peak_memory_bytes == by_hand + 128
    # The same network in float needs four bytes a tensor: four times as much.
    float_plan = best_order(canonical_float(), lambda p, v: v.type.numel() * 4)
    assert float_plan.peak_bytes == 4 * by_hand


def canonical_float() -> Graph:
    return run_pipeline(mobilenet_like(), "canonicalize").graph


def test_the_schedule_says_which_values_share_a_buffer(int8: Graph) -> None:
    plan = schedule(int8)
    name = {v.name: v for b in plan.buffers for v in b.values}
    # ReLU6 runs in place on its conv's output; the Add on the projection; Flatten is a view.
    assert plan.buffer_of(name["stem_act_y"]) is plan.buffer_of(name["stem_y"])
    assert plan.buffer_of(name["b1_add_y"]) is plan.buffer_of(name["b1_project_y"])
    assert plan.buffer_of(name["flat_y"]) is plan.buffer_of(name["gap_y"])
    skip = plan.buffer_of(name["stem_act_y"])  # read by b1_expand and, last, by the Add
    order = [n.name for n in plan.order]
    assert (skip.first, skip.last) == (order.index("stem"), order.index("b1_add"))
    assert plan.buffer_of(name["x"]).first == -1
    assert plan.buffer_of(int8.outputs[0]).last == len(order) - 1
    assert sum(len(b.values) for b in plan.buffers) == len(tensor_storage(int8))


def test_no_in_place_write_over_a_view_someone_else_still_reads() -> None:
    # a -> Reshape -> Relu, and a read by conv c too: Relu must not overwrite a's buffer.
    b = Builder((1, 4, 8, 8))
    a = b.conv(b.x, 4, name="a")
    r = b.op("Relu", b.op("Reshape", a, b.g.add_constant(np.array([1, 256]), "shape"), name="view"), name="relu")
    c = b.conv(a, 4, name="c")
    g = b.done(r, c)
    plan = best_order(g, lambda p, v: v.type.numel())
    by = {v.name: buf for buf in plan.buffers for v in buf.values}
    assert by["relu_y"] is not by["a_y"] and by["view_y"] is by["a_y"]


def test_an_output_nobody_reads_dies_at_its_step() -> None:
    b = Builder((1, 4, 8, 8))
    g = b.g
    node = g.add_node("MaxPool", [b.x], attrs={"kernel_shape": Attr.ints([2, 2]), "strides": Attr.ints([2, 2]),
                                            "storage_order": Attr.int(0)},
                      name="pool", output_names=["pool_y", "pool_idx"])
    refresh_types(g)
    y = b.conv(node.outputs[0], 4, name="conv")
    g = b.done(y)
    plan = best_order(g, lambda p, v: v.type.numel() * v.type.dtype.bits // 8)
    idx = next(buf for buf in plan.buffers if buf.values[0].name == "pool_idx")
    assert idx.first == idx.last == 0
    assert plan.live_bytes(1) == 4 * 4 * 4 * 4 * 2  # pooled input and conv output, not the indices


@pytest.mark.slow
def test_mobilenetv2_035_at_144_fits_the_cortex_m7(tmp_path: Path) -> None:
    from hwnas.search.spaces import mobilenetv2, to_graph

    config = mobilenetv2.MBConfig(width=0.35, resolution=144)
    calib = tmp_path / "calib.npz"
    np.savez(calib, np.random.default_rng(0).standard_normal((4, 3, 144, 144)).astype(np.float32))
    graph = to_graph(mobilenetv2.build(config), config.input_shape, "mbv2-0.35-144")
    graph = run_pipeline(graph, "canonicalize,quantize", calib=str(calib)).graph
    report = estimate(graph, "cortex-m7")
    # Stage 2's first block: its 48-channel expansion at 72x72 and depthwise output at 36x36.
    assert report.extra["sram_activations_bytes"] == 48 * 72 * 72 + 48 * 36 * 36 == 311040
    assert report.fits


@pytest.mark.parametrize("name", ["int8", "resnet50", "inception_v2"])
def test_the_live_sets_of_the_buffers_give_the_peak(name: str, int8: Graph, light_model_paths: dict[str, str]) -> None:
    # What a memory plan relies on: the buffers live at each step (their makers, readers and
    # lifetimes over the order) sum to the schedule's peak at the worst step, and never above it.
    from hwnas.frontends import load_graph

    graph = int8 if name == "int8" else run_pipeline(load_graph(light_model_paths[name]), "canonicalize").graph
    plan = schedule(graph)
    step = {id(n): i for i, n in enumerate(plan.order)}
    for b in plan.buffers:
        maker = b.values[0].producer
        assert b.first == (step[id(maker)] if maker is not None else -1)
        readers = [step[id(u)] for v in b.values for u in v.users if id(u) in step]
        assert all(b.first < r <= b.last for r in readers) and (not readers or max(readers) == b.last
                                                                 or any(v in graph.outputs for v in b.values))
    assert max(plan.live_bytes(i) for i in range(-1, len(plan.order))) == plan.peak_bytes
