"""What every cost model shares: the per-op registry, and each node's work as the target
sees it (MACs after pruning, bytes at the chosen precision, fused activations folded in).

A cost model module makes one `CostTable` and registers per-op functions on it:

    table = CostTable("roofline")

    @table.cost("Conv", "ConvTranspose")
    def conv(w: NodeWork, hw: Roofline) -> NodeCost: ...

`@table.cost("*")` is the fallback for priced ops without their own entry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource, figures_machine, fit_reasons
from hwnas.backends.emit.qdq import quantized_bias
from hwnas.backends.target import PRECISIONS, Target
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import (
    GraphWeights,
    KernelKind,
    graph_weights,
    is_priced,
    is_static,
    is_weight,
    kernel_kind,
    op_counts,
    static_values,
    traits,
)
from hwnas.ir.types import DType

CostFn = Callable[..., NodeCost]


class CostTable:
    """One cost model's per-op functions, registered with `@table.cost("Conv", ...)`;
    `"*"` is the fallback for priced ops without their own entry."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._fns: dict[str, CostFn] = {}

    def cost(self, *ops: str) -> Callable[[CostFn], CostFn]:
        """Decorator: the function prices nodes of `ops` (`fn(work, hw, ctx) -> NodeCost`)."""

        def deco(fn: CostFn) -> CostFn:
            for op in ops:
                self._fns[op] = fn
            return fn

        return deco

    def lookup(self, op: str) -> CostFn | None:
        """The function for `op`, else the fallback, else None."""
        return self._fns.get(op, self._fns.get("*"))

    @property
    def ops(self) -> frozenset[str]:
        """The ops with an entry ("*" among them when there is a fallback)."""
        return frozenset(self._fns)


@dataclass
class NodeWork:
    """One node's work as a target sees it."""

    node: Node
    kind: KernelKind
    """conv, depthwise, gemm, pool, elementwise, movement, other: how kernels are grouped
    (the registry's `kernel_kind`)."""
    macs: int
    flops: int
    weight_bytes: int
    """Bytes of the weights counted at this node (the registry's `graph_weights`: each weight
    of the model at one node), at the node's weight precision. A weight counted at another
    node (shared, as tied embeddings are) is read as an activation is: `act_bytes_read`."""
    act_bytes_read: int
    act_bytes_written: int
    precision: str
    fused: list[Node] = field(default_factory=list)

    @property
    def ops(self) -> int:
        """Arithmetic operations, a MAC counting two."""
        return max(self.flops, 2 * self.macs)

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.act_bytes_read + self.act_bytes_written

    def node_cost(self, latency_s: float, energy_j: float, bound: Bound, **kw: Any) -> NodeCost:
        note = kw.pop("note", "")
        if self.fused:
            fused = ", ".join(n.name for n in self.fused)
            note = f"{note}; fused: {fused}" if note else f"fused: {fused}"
        return NodeCost(self.node.name, self.node.qualified_op, latency_s, energy_j, self.bytes, bound,
                        macs=self.macs, precision=self.precision, note=note, **kw)


def _bits(dtype: DType | None) -> tuple[int, bool]:
    if dtype is None:
        return 32, True
    return dtype.bits, dtype.is_float


def precision_for(node: Node, supported: set[str] | dict[str, Any]) -> str:
    """The datapath this node runs on: the narrowest precision the target has that holds
    the node's bits (from its quantization annotation, else its tensors' dtype)."""
    q = node.ann.quant
    x = node.input(0)
    width, is_float = _bits(x.type.dtype if x is not None and x.type is not None else None)
    if q is not None and (q.w_bits or q.a_bits):
        width, is_float = max(q.w_bits or 0, q.a_bits or 0), False
    want = (("fp16" if width <= 16 else "fp32") if is_float else f"int{width}")
    if want in supported:
        return want
    candidates = [p for p in PRECISIONS if p in supported and _width(p) >= width and (is_float <= p.startswith("fp"))]
    if candidates:
        return min(candidates, key=_width)
    return "fp32" if "fp32" in supported else max(supported, key=_width)


def _width(p: str) -> int:
    return int(p.lstrip("intfpb"))


def activation_bits(node: Node, v: Value) -> float:
    """Bits per element of `v` as `node` writes it: its quantized activation width, else the
    value's own element width (32 when untyped)."""
    q = node.ann.quant
    if q is not None and q.a_bits:
        return q.a_bits
    return (v.type.dtype.bits) if v.type is not None else 32


def value_bytes(v: Value | None, bits: float) -> int:
    """Bytes of `v` at `bits` per element, rounded up; 0 when its size is unknown."""
    if v is None or v.type is None:
        return 0
    n = v.type.numel()
    return math.ceil((n or 0) * bits / 8)


def is_compile_time(node: Node, static: Callable[[Value], bool] = is_static) -> bool:
    """Every input is known before run time (a Constant has none): the node is folded away when
    compiling. A node without inputs that makes no known value (RandomNormal) runs."""
    if not node.inputs:
        return bool(node.outputs) and all(static(v) for v in node.outputs)
    return all(v is None or static(v) for v in node.inputs) and bool(node.outputs)


def node_work(node: Node, target: Target, supported: set[str] | dict[str, Any], graph: Graph,
              static: Callable[[Value], bool] = is_static, weights: GraphWeights | None = None) -> NodeWork | None:
    """The node's work on this target, or None when the op is unpriced. `weights` says which
    weights are counted at the node (default: every weight it reads, as for a lone node)."""
    counts = op_counts(node, static, weights)
    if counts is None:
        return None
    precision = precision_for(node, supported)
    q = node.ann.quant
    macs, flops = counts.macs, counts.flops
    w_bits = float(q.w_bits) if q is not None and q.w_bits else None
    weight_bytes = 0
    act_read = 0
    owned = weights.of(node) if weights is not None else None
    for v in node.inputs:
        if v is None:
            continue
        if is_weight(v, static) and v.type is not None:
            bits = w_bits or v.type.dtype.bits
            if w_bits and v is node.input(2) and v is not node.input(1) and quantized_bias(node):
                bits = 32  # the int32 bias integer kernels add (CMSIS-NN, onnxruntime's QLinearConv)
            if owned is None or any(v is o for o in owned):
                weight_bytes += value_bytes(v, bits)
            else:
                act_read += value_bytes(v, bits)
        elif not static(v):
            act_read += value_bytes(v, activation_bits(node, v))
    act_written = sum(value_bytes(v, activation_bits(node, v)) for v in node.outputs)
    s = node.ann.sparsity
    if s is not None:
        if s.structured and s.kept_channels:
            w = node.input(1)
            full = w.type.shape[0] if w is not None and w.type is not None and w.type.shape else None
            if isinstance(full, int) and full > s.kept_channels:
                scale = s.kept_channels / full
                macs, flops, weight_bytes = int(macs * scale), int(flops * scale), int(weight_bytes * scale)
        elif s.weight_sparsity > 0 and target.skips_zeros:
            keep = 1.0 - s.weight_sparsity
            macs, flops, weight_bytes = int(macs * keep), int(flops * keep), int(weight_bytes * keep)
    work = NodeWork(node, kernel_kind(node), macs, flops, weight_bytes, act_read, act_written, precision)
    fa = node.ann.fused_activation
    if fa is not None:
        fused = graph.node_by_name(fa.node)
        if fused is not None:
            extra = op_counts(fused, static, weights)
            work.flops += extra.flops if extra is not None else 0
            # Its weights (PRelu's slope) are stored with the kernel that runs it.
            work.weight_bytes += extra.param_bytes if extra is not None else 0
            work.fused.append(fused)
            # The kernel writes the activation's output instead of its own: same size.
    return work


@dataclass(frozen=True)
class Context:
    """What a per-op cost function may need beyond the node: the whole target, the
    model's total weight bytes (which memory level holds them), an optional predictor."""

    target: Target
    weight_bytes: int
    predictor: Predictor | None = None


class Predictor(Protocol):
    """A fitted latency model (see hwnas.calibrate): seconds for one node's
    kernel on the target it was calibrated on, or None for kernels it does not know."""

    def predict(self, work: NodeWork) -> float | None: ...


def price_nodes(graph: Graph, target: Target, table: CostTable, hw: Any, supported: set[str] | dict[str, Any],
                predictor: Predictor | None = None, context: Callable[[Context], Context] | None = None,
                ) -> tuple[list[NodeCost], list[NodeWork]]:
    """Price every node with the table's functions; views, compile-time subgraphs and
    fused activations cost nothing of their own; unpriced ops are listed, never zero."""
    static = static_values(graph)
    weights = graph_weights(graph, static)
    folded = {id(n) for n in graph.nodes if is_compile_time(n, static)}
    works: list[NodeWork | None] = []
    for node in graph.nodes:
        works.append(None if id(node) in folded or traits(node).view or node.ann.fused_into is not None
                     else node_work(node, target, supported, graph, static, weights))
    ctx = Context(target, sum(w.weight_bytes for w in works if w is not None), predictor)
    if context is not None:
        ctx = context(ctx)  # a cost model's own settings (an FPGA design's reuse factor)
    costs: list[NodeCost] = []
    for node, w in zip(graph.nodes, works, strict=True):
        if node.ann.fused_into is not None:
            costs.append(NodeCost(node.name, node.qualified_op, 0.0, 0.0, 0, Bound.FUSED,
                                  note=f"runs inside {node.ann.fused_into.node}"))
        elif id(node) in folded:
            costs.append(free_cost(node, "folded at compile time"))
        elif traits(node).view:
            costs.append(free_cost(node, "a view of its input"))
        elif w is None:
            costs.append(unpriced_cost(node, SIZES_UNKNOWN if is_priced(node) else NO_ENTRY))
        elif any(v.type is None or not v.type.is_static for v in node.outputs):
            costs.append(unpriced_cost(node, "output shape not known before run time"))
        else:
            fn = table.lookup(node.op)
            if fn is None:
                costs.append(unpriced_cost(node))
                continue
            c = fn(w, hw, ctx)
            if predictor is not None and c.latency_s is not None:
                predicted = predictor.predict(w)
                if predicted is not None:
                    c = dataclasses.replace(c, latency_s=predicted, note=f"{c.note}; calibrated".lstrip("; "))
            costs.append(c)
    return costs, [w for w in works if w is not None]


def free_cost(node: Node, note: str) -> NodeCost:
    """A zero cost for a node that does no work of its own (a view, a fused activation);
    `note` says why."""
    return NodeCost(node.name, node.qualified_op, 0.0, 0.0, 0, Bound.FREE, note=note)


NO_ENTRY = "no cost entry for this op"
SIZES_UNKNOWN = "its sizes are not known before run time"


def unpriced_cost(node: Node, why: str = NO_ENTRY) -> NodeCost:
    """A node the cost model cannot price: no latency or energy (never a silent zero)."""
    return NodeCost(node.name, node.qualified_op, None, None, 0, Bound.UNPRICED, note=why)


def activation_size(producer: Node | None, v: Value) -> int:
    """Bytes of one activation buffer, at its producer's activation precision."""
    if producer is None:
        return value_bytes(v, (v.type.dtype.bits) if v.type is not None else 32)
    return value_bytes(v, activation_bits(producer, v))


def make_report(target: Target, graph: Graph, costs: list[NodeCost], order: list[Node], *, latency_s: float,
                peak_memory_bytes: int, weight_bytes: int, resources: dict[str, Resource],
                predictor: Predictor | None = None, extra: dict[str, float] | None = None,
                energy_j: float | None = None) -> CostReport:
    """Assemble a CostReport from per-node costs and the model-level figures; energy is
    the nodes' sum unless given, unpriced ops are counted by op."""
    unpriced: dict[str, int] = {}
    for c in costs:
        if c.bound is Bound.UNPRICED:
            unpriced[c.op] = unpriced.get(c.op, 0) + 1
    return CostReport(
        target=target.name, kind=target.kind,
        method="calibrated" if predictor is not None else "analytical",
        nodes=costs, latency_s=latency_s,
        energy_j=energy_j if energy_j is not None else sum(c.energy_j for c in costs if c.energy_j is not None),
        peak_memory_bytes=int(peak_memory_bytes), weight_bytes=int(weight_bytes),
        order=[n.name for n in order], resources=resources, does_not_fit=fit_reasons(resources),
        unpriced=unpriced, extra=extra or {}, machine=figures_machine(target.machine, predictor),
    )
