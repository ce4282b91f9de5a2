"""CPU and GPU: a roofline per kernel.

latency = max(ops / peak[precision], bytes / bandwidth) + kernel overhead, where the
activations stream from the smallest memory level that holds the kernel's working set and
the weights from the level that holds all of the model's weights. Energy is ops × pJ/op
at the precision, bytes × pJ/byte of the level they come from, and static power × time.
Fused activations add their arithmetic to the host kernel but no launch and no traffic.
"""

from __future__ import annotations

from hwnas.backends.cost import cost_model
from hwnas.backends.cost.base import (
    Context,
    CostTable,
    NodeWork,
    Predictor,
    activation_size,
    make_report,
    price_nodes,
)
from hwnas.backends.cost.liveness import peak_memory
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.target import MemoryLevel, Roofline, Target
from hwnas.ir.graph import Graph

table = CostTable("roofline")
cost = table.cost


def level_for(hw: Roofline, nbytes: float) -> MemoryLevel:
    """The smallest memory level that holds `nbytes` (the largest when none does)."""
    for level in hw.memory:
        if nbytes <= level.size_bytes:
            return level
    return hw.memory[-1]


def roofline(w: NodeWork, hw: Roofline, efficiency: float = 1.0, model_weight_bytes: int = 0) -> NodeCost:
    """One kernel's roofline cost: the slower of compute (at `efficiency` of peak) and memory
    traffic, plus the launch overhead; energy per op, per byte and static power."""
    peak = hw.peak_ops_per_s[w.precision] * efficiency
    compute_s = w.ops / peak
    act = w.act_bytes_read + w.act_bytes_written
    act_level = level_for(hw, act)
    w_level = level_for(hw, max(model_weight_bytes, w.weight_bytes))
    memory_s = act / act_level.bandwidth_bytes_per_s + w.weight_bytes / w_level.bandwidth_bytes_per_s
    busy = max(compute_s, memory_s)
    latency = busy + hw.kernel_overhead_s
    if hw.kernel_overhead_s > busy:
        bound = Bound.OVERHEAD
    else:
        bound = Bound.COMPUTE if compute_s >= memory_s else Bound.MEMORY
    energy = (w.ops * hw.pj_per_op[w.precision] + act * act_level.pj_per_byte
              + w.weight_bytes * w_level.pj_per_byte) * 1e-12 + hw.static_w * latency
    return w.node_cost(latency, energy, bound, note=f"activations in {act_level.name}")


@cost("*")
def generic(w: NodeWork, hw: Roofline, ctx: Context) -> NodeCost:
    """Any op: its roofline at full efficiency."""
    return roofline(w, hw, model_weight_bytes=ctx.weight_bytes)


@cost("Conv", "ConvInteger", "QLinearConv")
def conv(w: NodeWork, hw: Roofline, ctx: Context) -> NodeCost:
    """A convolution: its roofline, at the target's depthwise efficiency for depthwise ones."""
    # Depthwise convolutions reuse each weight little and vectorize poorly.
    eff = hw.depthwise_efficiency if w.kind == "depthwise" else 1.0
    return roofline(w, hw, efficiency=eff, model_weight_bytes=ctx.weight_bytes)


@cost_model("cpu", "gpu")
def estimate(graph: Graph, target: Target, predictor: Predictor | None = None) -> CostReport:
    """The CPU or GPU report: nodes in graph order, and peak memory of resident weights plus
    live activations."""
    hw = target.section(Roofline)
    costs, works = price_nodes(graph, target, table, hw, hw.peak_ops_per_s, predictor)
    weight_bytes = sum(w.weight_bytes for w in works)
    # Runtimes keep the graph's own order; weights stay resident beside the activations.
    peak = weight_bytes + peak_memory(graph, activation_size)
    capacity = hw.memory[-1]
    resources = {capacity.name: Resource(peak, capacity.size_bytes, "B")}
    latency = sum(c.latency_s for c in costs if c.latency_s is not None)
    return make_report(target, graph, costs, list(graph.nodes), latency_s=latency, peak_memory_bytes=peak,
                       weight_bytes=weight_bytes, resources=resources, predictor=predictor)
