"""CPU and GPU: a roofline per kernel.

latency = max(ops / peak[precision], bytes / bandwidth) + kernel overhead, where the
activations stream from the smallest memory level that holds the kernel's working set and
the weights from the level that holds all of the model's weights. Energy is ops × pJ/op
at the precision, bytes × pJ/byte of the level they come from, and static power × time.
Fused activations add their arithmetic to the host kernel but no launch and no traffic.

A quantized node is priced as the target's runtime runs its QDQ form (`Roofline.qdq`): on
"integer" runtimes (onnxruntime's CPU EP, TensorRT) as one integer kernel at the int peak; on
"dequantize" runtimes (onnxruntime's CUDA EP, which has no int8 convolution or GEMM kernels for
QDQ models) as the float op on float tensors plus each QuantizeLinear/DequantizeLinear the QDQ
emitter puts around it, each a kernel of its own (weights included: onnxruntime does not fold a
DequantizeLinear of an initializer, so that QDQ fusion stays possible).
"""

from __future__ import annotations

import dataclasses
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
from hwnas.backends.cost.liveness import peak_memory
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.target import MemoryLevel, Roofline, Target
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import traits

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


def _numel(v: Value | None) -> int:
    return (v.type.numel() or 0) if v is not None and v.type is not None else 0


def _float_bits(v: Value | None) -> int:
    """Bits of a float tensor as the runtime holds it (32 when untyped or not a float)."""
    return v.type.dtype.bits if v is not None and v.type is not None and v.type.dtype.is_float else 32


def _conversion(w: NodeWork, elements: int, read_bits: float, write_bits: float, from_weights: bool = False,
                ) -> NodeWork:
    """One QuantizeLinear/DequantizeLinear (or fake-quant step) over `elements` as its own kernel."""
    read = math.ceil(elements * read_bits / 8)
    return dataclasses.replace(w, kind="elementwise", macs=0, flops=2 * elements, fused=[],
                               weight_bytes=read if from_weights else 0, act_bytes_read=0 if from_weights else read,
                               act_bytes_written=math.ceil(elements * write_bits / 8))


def _grid(node: Node) -> tuple[int | None, float | None, int | None] | None:
    q = node.ann.quant
    return (q.a_bits, q.a_scale, q.a_zero_point) if q is not None and q.a_bits else None


def _shares_input_grid(node: Node, x: Value) -> bool:
    """An earlier reader of `x` (as its data input) quantizes it on the same grid."""
    for user, i in x.uses:
        if user is node:
            return False
        if i == 0 and _grid(user) == _grid(node):
            return True
    return False


def _qdq_kernels(w: NodeWork, node: Node, fbits: int) -> list[NodeWork]:
    """The conversion kernels the QDQ emitter (`hwnas.backends.emit.qdq`) puts around `node`."""
    from hwnas.backends.emit.qdq import output_point, quantized_bias, tensor_grids

    q = node.ann.quant
    assert q is not None
    out: list[NodeWork] = []

    def pair(n: int) -> None:  # a uint8 QuantizeLinear then DequantizeLinear
        out.extend((_conversion(w, n, fbits, 8), _conversion(w, n, 8, fbits)))

    x = node.input(0)
    grids = tensor_grids(node.graph) if node.graph is not None else {}
    # A grid the emitter carries to x is priced where x is made (a view's, here: views are free).
    carried = (q.a_bits == 8 and x is not None and grids.get(x) == (q.a_scale, q.a_zero_point)
               and x.producer is not None and not traits(x.producer).view)
    if q.a_bits and x is not None and (carried or _shares_input_grid(node, x)):
        pass  # an earlier reader on the same grid has these nodes; the emitter shares them
    elif q.a_bits == 8:
        pair(_numel(x))
    elif q.a_bits:  # fake-quant: Mul, Round, Clip, Mul in float
        out.extend(_conversion(w, _numel(x), fbits, fbits) for _ in range(4))
    weight = node.input(1)
    if q.w_bits and q.w_bits <= 8 and weight is not None and weight.const is not None:
        out.append(_conversion(w, _numel(weight), 8, fbits, from_weights=True))  # int8 storage
    if quantized_bias(node):
        out.append(_conversion(w, _numel(node.input(2)), 32, fbits, from_weights=True))  # int32 bias
    point = output_point(node)
    if point is not None:
        pair(_numel(point))
    return out


def dequantized(w: NodeWork, hw: Roofline, ctx: Context, efficiency: float = 1.0) -> NodeCost:
    """A quantized node on a runtime that runs QDQ in float (`qdq = "dequantize"`): the op at the
    float peak on float tensors, plus one kernel per Q/DQ node of its QDQ form."""
    node, q = w.node, w.node.ann.quant
    assert q is not None
    x = node.input(0)
    fbits = _float_bits(x)
    precision = "fp16" if fbits == 16 and "fp16" in hw.peak_ops_per_s else "fp32"
    wbits = _float_bits(node.input(1))
    # The work node_work counted at the quantized widths, back at the float widths it runs in.
    weight_bytes = math.ceil(w.weight_bytes * wbits / q.w_bits) if q.w_bits else w.weight_bytes
    act_scale = fbits / q.a_bits if q.a_bits else 1.0
    op = dataclasses.replace(w, precision=precision, weight_bytes=weight_bytes,
                             act_bytes_read=math.ceil(w.act_bytes_read * act_scale),
                             act_bytes_written=math.ceil(w.act_bytes_written * act_scale))
    main = roofline(op, hw, efficiency=efficiency, model_weight_bytes=ctx.weight_bytes)
    kernels = [roofline(k, hw, model_weight_bytes=ctx.weight_bytes) for k in _qdq_kernels(op, node, fbits)]
    runtime = hw.execution_provider or "this runtime"
    note = (f"QDQ on {runtime}: runs in {precision} after dequantizing, no int{q.w_bits or q.a_bits} kernel; "
            f"+{len(kernels)} Q/DQ kernels; {main.note}")
    return dataclasses.replace(
        main, latency_s=(main.latency_s or 0.0) + sum(k.latency_s or 0.0 for k in kernels),
        energy_j=(main.energy_j or 0.0) + sum(k.energy_j or 0.0 for k in kernels),
        bytes_moved=main.bytes_moved + sum(k.bytes_moved for k in kernels), note=note)


def _runs_dequantized(w: NodeWork, hw: Roofline) -> bool:
    q = w.node.ann.quant
    return hw.qdq == "dequantize" and q is not None and bool(q.w_bits or q.a_bits)


def _moved_grid_kernels(w: NodeWork, hw: Roofline, ctx: Context, c: NodeCost) -> NodeCost:
    """An unquantized node whose output the QDQ emitter puts on a grid it carries (after MaxPool,
    Flatten, ... or before a pooling whose reader quantizes it): that Q/DQ pair, on a runtime that
    dequantizes."""
    from hwnas.backends.emit.qdq import output_point, tensor_grids

    node = w.node
    if hw.qdq != "dequantize" or node.graph is None or node.ann.quant is not None:
        return c
    grids = tensor_grids(node.graph)
    points = {id(output_point(n)) for n in node.graph.nodes if n.ann.quant is not None}  # priced at their node
    outs = [v for v in node.outputs if v in grids and id(v) not in points]
    if not outs:
        return c
    fbits = _float_bits(outs[0])
    kernels = [roofline(k, hw, model_weight_bytes=ctx.weight_bytes) for v in outs
               for k in (_conversion(w, _numel(v), fbits, 8), _conversion(w, _numel(v), 8, fbits))]
    return dataclasses.replace(
        c, latency_s=(c.latency_s or 0.0) + sum(k.latency_s or 0.0 for k in kernels),
        energy_j=(c.energy_j or 0.0) + sum(k.energy_j or 0.0 for k in kernels),
        bytes_moved=c.bytes_moved + sum(k.bytes_moved for k in kernels),
        note=f"+{len(kernels)} Q/DQ kernels (grid carried through); {c.note}")


@cost("*")
def generic(w: NodeWork, hw: Roofline, ctx: Context) -> NodeCost:
    """Any op: its roofline at full efficiency (in float plus its Q/DQ kernels when quantized on
    a runtime that dequantizes, or when the QDQ emitter carries a grid through its output)."""
    if _runs_dequantized(w, hw):
        return dequantized(w, hw, ctx)
    return _moved_grid_kernels(w, hw, ctx, roofline(w, hw, model_weight_bytes=ctx.weight_bytes))


PRELU_NOTE = ("onnxruntime's CPU PRelu branches on each element's sign: on inputs of independent mixed signs it "
              "ran 8-9x slower than on one-signed ones of the same shape, with signs in patches as in feature maps "
              "4.7x (fp32, x86; tools/bench/data_dependence.py), LeakyRelu not at all; the roofline prices the "
              "one-signed case, a calibration the patches")


@cost("PRelu")
def prelu(w: NodeWork, hw: Roofline, ctx: Context) -> NodeCost:
    """PRelu: the generic roofline; on a CPU running onnxruntime the note says that its time
    depends on the data (the input's signs), which no shape-based price can see."""
    c = generic(w, hw, ctx)
    if ctx.target.kind == "cpu" and hw.execution_provider in ("", "CPUExecutionProvider"):
        return dataclasses.replace(c, note=f"{c.note}; {PRELU_NOTE}", data_dependent=True)
    return c


@cost("Conv", "ConvInteger", "QLinearConv")
def conv(w: NodeWork, hw: Roofline, ctx: Context) -> NodeCost:
    """A convolution: its roofline, at the target's depthwise efficiency for depthwise ones (in
    float plus its Q/DQ kernels when quantized on a runtime that dequantizes)."""
    # Depthwise convolutions reuse each weight little and vectorize poorly.
    eff = hw.depthwise_efficiency if w.kind == "depthwise" else 1.0
    if _runs_dequantized(w, hw):
        return dequantized(w, hw, ctx, efficiency=eff)
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
