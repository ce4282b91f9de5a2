"""Microcontrollers: cycles from MACs per cycle, flash for weights and code, peak SRAM.

Cycles = work / (MACs per cycle for the kernel kind at the precision) + a fixed per-layer
overhead (loop setup, requantization, the interpreter's dispatch). Energy is active power
× time: an MCU's dynamic power barely depends on which instruction runs. Flash holds the
weights at their precision plus code (a base runtime and one kernel per distinct op).
SRAM holds activations: the peak over the execution order, after an order search, with
element-wise ops in place, plus the largest kernel scratch buffer (im2col).

Every activation is sized as the device stores it (`tensor_storage`): a tensor on an 8-bit
grid (a quantized node's output, with the ReLU/ReLU6 fused into it; an integer residual
Add's; pools and reshapes of such tensors; a graph input every reader quantizes) in one
byte per element, a float one in four. What a C backend needs to lay out the same memory
is public and stable: `tensor_storage` (each tensor's element type, bytes and grid),
`schedule` (the execution order the estimate prices and each buffer's lifetime over it)
and `scratch_bytes` (a kernel's scratch buffer); the report's SRAM is
`schedule(graph).peak_bytes` plus the largest `scratch_bytes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwnas.backends.cost import cost_model
from hwnas.backends.cost.base import (
    Context,
    CostTable,
    NodeWork,
    Predictor,
    is_compile_time,
    make_report,
    price_nodes,
    value_bytes,
)
from hwnas.backends.cost.liveness import Schedule, best_order
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.emit.qdq import output_tensor, tensor_grids
from hwnas.backends.target import MCU, Target
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import kernel_kind, static_values
from hwnas.ir.types import DType

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


def scratch_bytes(node: Node) -> int:
    """The scratch buffer a convolution's kernel needs beside its input and output: CMSIS-NN
    expands two columns of im2col into int16, 2 x Cin*kh*kw x 2 bytes (none for depthwise
    and for other ops)."""
    if node.op not in ("Conv", "ConvInteger", "QLinearConv") or kernel_kind(node) == "depthwise":
        return 0
    weight = node.input(1 if node.op != "QLinearConv" else 3)
    shape = weight.type.static_shape if weight is not None and weight.type is not None else None
    per_out = math.prod(shape[1:]) if shape else 0
    return 2 * int(per_out) * 2


@cost("Conv", "ConvInteger", "QLinearConv")
def conv(w: NodeWork, hw: MCU, ctx: Context) -> NodeCost:
    """A convolution: MACs at the kernel kind's rate, plus CMSIS-NN's im2col scratch buffer."""
    return _cycles_cost(w, hw, w.macs, w.kind, scratch_bytes(w.node))


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


@dataclass(frozen=True)
class StoredTensor:
    """How the device stores one run-time tensor: its element type, its size in bytes, and
    for an integer tensor the grid it holds (real = scale * (integer - zero_point))."""

    dtype: DType
    """FLOAT for a float tensor; UINT8 (UINT16) for an asymmetric grid of up to 8 (16) bits,
    as the QDQ artifact stores it (a C backend may store it as int8 with zero_point - 128,
    as CMSIS-NN does: the same bytes)."""
    nbytes: int
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        """True for a tensor on an integer grid."""
        return self.scale is not None


def tensor_storage(graph: Graph) -> dict[Value, StoredTensor]:
    """Every run-time tensor of GRAPH as the device stores it: graph inputs not known at
    compile time and outputs of nodes not folded at compile time (the buffers of `schedule`).
    On an 8-bit grid, one byte per element: the tensors the QDQ emission puts on a grid
    (`tensor_grids`: outputs of quantized nodes and integer Adds, of MaxPool, Flatten, ...
    over them, and pools read only by quantized nodes); the output of a node with an output
    grid and of the ReLU or Clip fused into it (`output_tensor`); a graph input every reader
    quantizes as its data input (one byte for up to 8 bits, two for 16). Any other tensor at
    its own element type (a float tensor a quantized node reads is counted as the float
    tensor it is; so is a Concat of quantized tensors, which has no grid of its own)."""
    static = static_values(graph)
    grids: dict[Value, tuple[float, int]] = dict(tensor_grids(graph))
    for n in graph.nodes:
        q = n.ann.quant
        if q is None or q.o_scale is None or q.o_zero_point is None:
            continue
        point = output_tensor(n)  # the kernel writes its grid after the fused ReLU/Clip
        for v in {id(v): v for v in (n.outputs[0], point) if v is not None}.values():
            grids.setdefault(v, (q.o_scale, q.o_zero_point))
    out: dict[Value, StoredTensor] = {}
    for v in graph.inputs:
        if not static(v):
            out[v] = _input_storage(v) or _own(v)
    for n in graph.nodes:
        if is_compile_time(n, static):
            continue
        for v in n.outputs:  # a Constant node's too: liveness counts it as a buffer
            grid = grids.get(v)
            out[v] = _own(v) if grid is None else _on_grid(v, 8, *grid)
    return out


def _on_grid(v: Value, bits: int, scale: float, zero_point: int) -> StoredTensor:
    dtype = DType.UINT8 if bits <= 8 else DType.UINT16
    return StoredTensor(dtype, value_bytes(v, dtype.bits), scale, zero_point)


def _own(v: Value) -> StoredTensor:
    dtype = v.type.dtype if v.type is not None else DType.FLOAT
    return StoredTensor(dtype, value_bytes(v, dtype.bits))


def _input_storage(v: Value) -> StoredTensor | None:
    """A graph input every reader quantizes to one grid as its data input, on that grid."""
    grids = set()
    for u, i in v.uses:
        q = u.ann.quant
        if i != 0 or q is None or not q.a_bits or q.a_scale is None or q.a_zero_point is None:
            return None
        grids.add((q.a_bits, q.a_scale, q.a_zero_point))
    return _on_grid(v, *grids.pop()) if len(grids) == 1 else None


def schedule(graph: Graph) -> Schedule:
    """The execution order the MCU estimate prices (the lowest peak found, `best_order`),
    with every buffer sized as `tensor_storage` says and its lifetime over that order."""
    storage = tensor_storage(graph)
    return best_order(graph, lambda producer, v: storage[v].nbytes)


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
    plan = schedule(graph)
    scratch = max((c.resources.get("scratch_bytes", 0) for c in costs), default=0)
    sram = plan.peak_bytes + scratch
    resources = {
        "SRAM": Resource(sram, hw.sram_bytes, "B"),
        "flash": Resource(flash, hw.flash_bytes, "B"),
    }
    latency = sum(c.latency_s for c in costs if c.latency_s is not None)
    extra = {"sram_activations_bytes": plan.peak_bytes, "sram_given_order_bytes": plan.given_peak_bytes,
             "sram_scratch_bytes": scratch, "flash_code_bytes": flash - weight_bytes,
             "order_search_exact": float(plan.exact)}
    return make_report(target, graph, costs, plan.order, latency_s=latency, peak_memory_bytes=int(sram),
                       weight_bytes=weight_bytes, resources=resources, predictor=predictor, extra=extra)
