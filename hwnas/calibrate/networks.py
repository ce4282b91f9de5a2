"""Whole networks profiled for the in-network correction.

A kernel timed alone is not the kernel inside a network: there its input was just written by
the kernel before (still in the caches), its weights may or may not have been evicted, and
onnxruntime converts layouts on tensors it has just produced. Summed, single-kernel times
priced NAS-Bench-201 networks 11% high and light ResNet-50 14% low on this project's Xeon.
So a calibration also profiles a hundred or so networks drawn from hwnas's own search spaces
(NAS-Bench-201 cells at C = 16/32/64, MobileNetV2-like at 96-224 px; `sample_specs`, seeded
apart from anything the benchmark draws), attributes each onnxruntime node's profiled time to
the IR node heading its kernel (`attribute`, through the fusion rules of `fusion`), and the
predictor learns per kernel group log(time inside / time alone) from the kernels' features
(`Calibration.correction`), and prices layout conversions as timed inside these networks.
"""

from __future__ import annotations

import dataclasses

from hwnas.backends.cost import estimate
from hwnas.backends.cost.base import NodeWork
from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.target import Target
from hwnas.calibrate.features import featurize
from hwnas.calibrate.fusion import role
from hwnas.calibrate.predictor import NetworkRow, NetworkSample
from hwnas.calibrate.timing import time_network
from hwnas.ir.graph import Graph, Node

SEED_OFFSET = 1_000_003
"""Network i of a calibration with seed s is draw i of `sample_specs(n, SEED_OFFSET + s)`."""
NCHWC_SUFFIX = "_nchwc"
"""onnxruntime names a node it moves to the NCHWc layout after its output value, plus this."""


def network_graph(index: int, seed: int) -> tuple[str, Graph]:
    """Network `index` of a calibration drawn with `seed`: its name and canonical IR graph."""
    from hwnas.passes import PassRunner, parse_pipeline
    from hwnas.search.spaces import build_spec, sample_specs, to_graph

    name, spec = sample_specs(index + 1, SEED_OFFSET + seed)[index]
    module = build_spec(spec, SEED_OFFSET + seed * 100_003 + index)
    graph = to_graph(module, spec.input_shape, name)
    return name, PassRunner().run(parse_pipeline("canonicalize"), graph).graph


def head_of(node: Node) -> Node | None:
    """The node heading the kernel `node` runs in: itself, or, for a node onnxruntime fuses into
    another, the kernel it was fused into (a residual Add into the conv that takes it in)."""
    for _ in range(64):
        if role(node) is not None:
            return node
        producers = [v.producer for v in node.inputs if v is not None and v.producer is not None]
        if not producers:
            return None
        if node.op in ("Add", "Sum"):
            fused = [p for p in producers if (r := role(p)) is not None and r.sum_fused]
            if fused:
                return fused[0]
        node = producers[0]
    return None


def attribute(graph: Graph, seconds: dict[str, float]) -> dict[str, float]:
    """Profiled seconds per onnxruntime node (`time_network`) summed per IR kernel head, by node
    name: onnxruntime keeps a node's name, names an NCHWc node after its output value
    (`NCHWC_SUFFIX`), and a fused node after the node that heads it; what names no IR node
    (onnxruntime's own rewrites) is left out."""
    nodes = {n.name: n for n in graph.nodes}
    values = {v.name: n for n in graph.nodes for v in n.outputs}
    heads: dict[str, float] = {}
    for name, t in seconds.items():
        node = nodes.get(name) or values.get(name.removesuffix(NCHWC_SUFFIX))
        head = head_of(node) if node is not None else None
        if head is not None:
            heads[head.name] = heads.get(head.name, 0.0) + t
    return heads


def measure_network(target: Target, index: int, seed: int, threads: int, bias_s: float) -> NetworkSample:
    """Network `index` of `seed`, profiled now: every priced kernel's features and its seconds
    inside the network, and the layout conversions' seconds."""
    name, graph = network_graph(index, seed)
    t = time_network(to_onnx(graph), threads=threads, bias_s=bias_s)
    return NetworkSample(index, name, kernel_rows(graph, target, attribute(graph, t.nodes)), t.reorders, t.wall_s,
                         t.overhead_s)


def refeaturize_network(sample: NetworkSample, target: Target, seed: int) -> NetworkSample:
    """The same measurements with this hwnas's features, the network rebuilt from its index."""
    _, graph = network_graph(sample.index, seed)
    seconds = {r.node: r.seconds for r in sample.rows}
    return dataclasses.replace(sample, rows=kernel_rows(graph, target, seconds))


def kernel_rows(graph: Graph, target: Target, seconds: dict[str, float]) -> tuple[NetworkRow, ...]:
    """The features of every kernel `estimate` prices in `graph` that has a time in `seconds`."""
    works: list[NodeWork] = []

    class _Recorder:
        def predict(self, work: NodeWork) -> float | None:
            works.append(work)
            return None

    estimate(graph, target, predictor=_Recorder())
    rows = []
    for work in works:
        f = featurize(work)
        if f is not None and work.node.name in seconds:
            rows.append(NetworkRow(work.node.name, f.group, f.op, f.values, f.scale_s, seconds[work.node.name],
                                   f.reorders))
    return tuple(rows)
