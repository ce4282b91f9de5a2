"""The in-network stage of a calibration: whole networks profiled with onnxruntime, their
nodes' times attributed to the IR kernels that head them, and the correction the predictor
learns from them (real onnxruntime sessions, real kernel measurements)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hwnas.backends.cost import estimate
from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.target import load_target
from hwnas.calibrate import calibrate, read_calibration, save_calibration
from hwnas.calibrate.features import Features
from hwnas.calibrate.fusion import role
from hwnas.calibrate.networks import attribute, kernel_rows, measure_network, network_graph, refeaturize_network
from hwnas.calibrate.predictor import INSIDE_REORDER, MIN_NETWORK_ROWS, Calibration, NetworkSample
from hwnas.calibrate.timing import time_network


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Calibration:
    """60 measured float kernels (convs, depthwise, element-wise, pools among them), no networks."""
    path = tmp_path_factory.mktemp("net") / "c.json"
    return calibrate("host-cpu", path, samples=60, progress=False, repeats=10, networks=0,
                     families=("conv", "depthwise", "elementwise", "pool"))


def test_profiled_time_goes_to_the_kernels_that_run_it() -> None:
    """onnxruntime renames what it fuses and moves to NCHWc; nearly all of a network's profiled
    time still lands on IR nodes that head a kernel, and with the profiler's own time per node
    taken off, the nodes sum to the network's unprofiled run."""
    name, graph = network_graph(0, seed=0)
    t = time_network(to_onnx(graph), bias_s=2e-6)
    heads = attribute(graph, t.nodes)
    nodes = {n.name: n for n in graph.nodes}
    assert heads and all(role(nodes[h]) is not None for h in heads)
    assert sum(heads.values()) >= 0.95 * sum(t.nodes.values())
    assert all(s >= 0 for s in heads.values())
    # NAS-Bench-201 at 16 channels: every cell's convs run NCHWc, its pools and adds convert.
    assert t.reorders and all(to in (0, 1) and min(c, h, w) >= 1 and s >= 0 for to, c, h, w, s in t.reorders)
    # The profiler adds a microsecond or two to each node; what is left sums to the run.
    assert 1e-6 <= t.overhead_s <= 6e-6
    total = sum(t.nodes.values()) + sum(r[4] for r in t.reorders)
    assert total == pytest.approx(t.wall_s, rel=0.1)


def test_a_measured_network_keeps_the_features_estimate_sees(tmp_path: Path) -> None:
    target = load_target("host-cpu")
    sample = measure_network(target, 1, seed=0, threads=1, bias_s=2e-6)
    name, graph = network_graph(1, seed=0)
    assert sample.name == name and sample.rows
    assert {r.node for r in sample.rows} <= {n.name for n in graph.nodes}
    assert all(r.seconds >= 0 and r.scale_s > 0 for r in sample.rows) and sample.wall_s > 0
    # Features are recomputed from the rebuilt network, seconds kept.
    again = refeaturize_network(sample, target, seed=0)
    assert again == sample


def _scaled_rows(cal: Calibration, graph_rows: list, factors: dict[str, float]) -> tuple:
    """Rows of real networks whose in-network seconds are `factors[op]` times the kernel alone."""
    out = []
    for r in graph_rows:
        alone = cal._alone(r.group, r.features, r.scale_s)
        if alone and r.op in factors:
            out.append(type(r)(r.node, r.group, r.op, r.features, r.scale_s, factors[r.op] * alone, r.reorders))
    return tuple(out)


def test_the_correction_learns_how_kernels_run_inside_networks(kernels: Calibration, tmp_path: Path) -> None:
    """Convs that run at half their time alone inside networks are priced at half; an op with too
    few kernels in the networks (the classifier's Gemm) keeps its single-kernel price; layout
    conversions scale by measured over predicted."""
    target = load_target("host-cpu")
    rows, graphs = [], []
    for i in range(3):
        _, g = network_graph(i, seed=7)
        graphs.append(g)
        rows.extend(kernel_rows(g, target, {n.name: 1.0 for n in g.nodes}))
    kernels.fit_all()
    scaled = _scaled_rows(kernels, rows, {"Conv": 0.5, "Relu": 2.0})
    convs = sum(r.op == "Conv" for r in scaled)
    assert convs >= MIN_NETWORK_ROWS
    # Layout conversions inside the networks at 0.8 of their single-kernel price.
    conversions = [(to, shape) for r in scaled for to, shape in r.reorders] * 40
    reorders = tuple((int(to), *shape, 0.8 * kernels._reorders(((to, shape),), inside=False))
                     for to, shape in conversions)
    assert len(reorders) >= MIN_NETWORK_ROWS
    nets = [NetworkSample(0, "synthetic", scaled, reorders)]
    cal = Calibration(kernels.target, kernels.measured_with, kernels.samples, networks=nets)
    cal.fit_all()
    assert "Conv" in cal.corrected_ops("conv")
    assert cal.corrected_ops("gemm") == set()
    assert cal.reorder_factor() == pytest.approx(0.8)
    assert cal.model(INSIDE_REORDER) is not None
    for to, shape in conversions[:20]:
        inside, alone = cal._reorders(((to, shape),)), cal._reorders(((to, shape),), inside=False)
        assert inside == pytest.approx(0.8 * alone, rel=0.1)
    ratios = [math.exp(cal.correction("conv").predict(r.features)) for r in scaled if r.op == "Conv"]
    assert max(abs(x - 0.5) for x in ratios) < 0.05
    # A conv unlike any in the networks (an input of 4096 rows) is not extrapolated to.
    conv = next(r for r in scaled if r.op == "Conv")
    inside = Features("conv", "Conv", conv.features, conv.scale_s)
    outside = Features("conv", "Conv", (conv.features[0], 4096.0, *conv.features[2:]), conv.scale_s)
    assert cal._corrected(inside) is not None and cal._corrected(outside) is None
    # Priced through estimate: the conv kernels of a network at half their single-kernel time.
    alone, inside = estimate(graphs[0], target, predictor=kernels), estimate(graphs[0], target, predictor=cal)
    by_node = {c.node: c.latency_s for c in alone.nodes}
    conv = [c for c in inside.nodes if c.node in {r.node for r in scaled if r.op == "Conv" and not r.reorders}]
    assert conv and all(c.latency_s == pytest.approx(0.5 * by_node[c.node], rel=0.05) for c in conv)
    # The networks go to the calibration file and come back.
    path = tmp_path / "c.json"
    save_calibration(cal, path)
    back = read_calibration(path)
    assert back.networks == cal.networks
    assert back.correction("conv") is not None and back.reorder_factor() == pytest.approx(cal.reorder_factor())


def test_a_calibration_without_networks_prices_kernels_as_alone(kernels: Calibration) -> None:
    assert kernels.networks == [] and kernels.reorder_factor() == 1.0 and kernels.model(INSIDE_REORDER) is None
    assert all(kernels.correction(g) is None for g in ("conv", "depthwise", "elementwise", "pool"))
