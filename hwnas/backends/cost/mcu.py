"""Microcontrollers: cycles from MACs per cycle, flash for weights and code, peak SRAM.

Cycles = work / (MACs per cycle for the kernel kind at the precision) + a fixed per-layer
overhead (loop setup, requantization, the interpreter's dispatch). Energy is active power
× time: an MCU's dynamic power barely depends on which instruction runs. Flash holds the
weights at their precision plus code (a base runtime and one kernel per distinct op).
SRAM holds activations: the peak over the execution order, after an order search, with
element-wise ops in place, plus the largest kernel scratch buffer (im2col).
"""

from __future__ import annotations

import math

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
from hwnas.backends.cost.liveness import best_order
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.target import MCU, Target
from hwnas.ir.graph import Graph

table = CostTable("mcu")
cost = table.cost


def _rate(hw: MCU, kind: str, precision: str) -> float:
    rates = hw.macs_per_cycle.get(kind) or hw.macs_per_cycle["elementwise"]
    if precision in rates:
        return rates[precision]
    # A precision the kernel kind has no entry for runs on the widest one listed.
    return min(rates.values())


def _cycles_cost(w: NodeWork, hw: MCU, work: float, kind: str, scratch: int = 0) -> NodeCost:
    cycles = work / _rate(hw, kind, w.precision) + hw.layer_overhead_cycles
    latency = cycles / hw.clock_hz
    bound = Bound.OVERHEAD if hw.layer_overhead_cycles * 2 > cycles else Bound.COMPUTE
    resources = {"cycles": cycles}
    if scratch:
        resources["scratch_bytes"] = scratch
    return w.node_cost(latency, hw.active_w * latency, bound, resources=resources)


@cost("Conv", "ConvInteger", "QLinearConv")
def conv(w: NodeWork, hw: MCU, ctx: Context) -> NodeCost:
    """A convolution: MACs at the kernel kind's rate, plus CMSIS-NN's im2col scratch buffer."""
    # CMSIS-NN's convolution expands 2 columns of im2col into an int16 buffer: 2 x Cin*kh*kw x 2 bytes.
    weight = w.node.input(1 if w.node.op != "QLinearConv" else 3)
    shape = weight.type.static_shape if weight is not None and weight.type is not None else None
    per_out = math.prod(shape[1:]) if shape else 0
    scratch = 0 if w.kind == "depthwise" else 2 * int(per_out) * 2
    return _cycles_cost(w, hw, w.macs, w.kind, scratch)


@cost("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul")
def gemm(w: NodeWork, hw: MCU, ctx: Context) -> NodeCost:
    """A dense product: MACs at the gemm rate."""
    return _cycles_cost(w, hw, w.macs, "gemm")


@cost("LSTM", "GRU", "RNN")
def recurrent(w: NodeWork, hw: MCU, ctx: Context) -> NodeCost:
    """A recurrent layer (CMSIS-NN's LSTM loops over the steps in one call): the W and R products'
    MACs at the gemm rate, the gates' element-wise math at the element-wise rate."""
    gate_math = max(w.flops - 2 * w.macs, 0)
    work = w.macs + gate_math * _rate(hw, "gemm", w.precision) / _rate(hw, "elementwise", w.precision)
    return _cycles_cost(w, hw, work, "gemm")


@cost("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
def pool(w: NodeWork, hw: MCU, ctx: Context) -> NodeCost:
    """A pooling op: its flops at the pool rate."""
    return _cycles_cost(w, hw, w.flops, "pool")


@cost("*")
def other(w: NodeWork, hw: MCU, ctx: Context) -> NodeCost:
    """Element-wise ops and data movement: one pass over the larger of input and output."""
    # Element-wise and data movement: one pass over the larger of input and output.
    elements = max(w.flops, (w.act_bytes_read + w.act_bytes_written) // 2)
    return _cycles_cost(w, hw, elements, "elementwise")


@cost_model("mcu")
def estimate(graph: Graph, target: Target, predictor: Predictor | None = None) -> CostReport:
    """The MCU's report: summed layer cycles, flash for weights and code, and peak SRAM over
    the best execution order found plus the largest scratch buffer."""
    hw = target.section(MCU)
    supported = {p for rates in hw.macs_per_cycle.values() for p in rates}
    costs, works = price_nodes(graph, target, table, hw, supported, predictor)
    weight_bytes = sum(w.weight_bytes for w in works)
    kernels = {w.node.op + w.kind for w in works}
    flash = weight_bytes + hw.code_bytes_base + hw.code_bytes_per_kernel * len(kernels)
    schedule = best_order(graph, activation_size)
    scratch = max((c.resources.get("scratch_bytes", 0) for c in costs), default=0)
    sram = schedule.peak_bytes + scratch
    resources = {
        "SRAM": Resource(sram, hw.sram_bytes, "B"),
        "flash": Resource(flash, hw.flash_bytes, "B"),
    }
    latency = sum(c.latency_s for c in costs if c.latency_s is not None)
    extra = {"sram_activations_bytes": schedule.peak_bytes, "sram_given_order_bytes": schedule.given_peak_bytes,
             "sram_scratch_bytes": scratch, "flash_code_bytes": flash - weight_bytes,
             "order_search_exact": float(schedule.exact)}
    return make_report(target, graph, costs, schedule.order, latency_s=latency, peak_memory_bytes=int(sram),
                       weight_bytes=weight_bytes, resources=resources, predictor=predictor, extra=extra)
