"""How onnxruntime's CPU provider runs an IR graph: which nodes it fuses into one kernel, which
tensors it keeps in its blocked NCHWc layout, and where it converts between layouts. These are
nn-Meter's "fusion rules", found by reading onnxruntime 1.32's optimized graphs on this machine
(single-op and two-op probes, and the benchmark's networks):

- A 2-D Conv with constant weights absorbs what follows it while its output has one reader:
  BatchNormalization and Mul/Add/Sub/Div by a scalar or per-channel constant; an Add/Sum with
  another NCHWc tensor of the same shape (the residual, NCHWc convs only); and one activation
  (Relu, Clip, Sigmoid, LeakyRelu, Tanh, HardSigmoid; after a residual only Relu). A Gemm
  absorbs an activation (FusedGemm).
- A conv runs in the blocked NCHWc layout when its input channels come in fours or number
  fewer than 16 (depthwise: in fours; grouped: multiples of 16 per group); it reads NCHW input
  directly below 16 input channels and needs a reorder from 16 up. Max/average pools with
  channels in 16s are NCHWc (reordering their input if need be); global pools and Concat (of
  single-use inputs) with channels in 16s are when their inputs already are, and so are
  BatchNormalization and per-channel Muls (which become 1x1 depthwise convs); Relu-like
  activations and Add/Sum/Mul of same-shape tensors stay NCHWc when all their inputs are (Clip
  and a Mul by a scalar do not). Every other op needs NCHW: a reorder back (ReorderOutput) before it, once per
  tensor. Inside a network these reorders are real kernels (a NAS-Bench-201 net can have 60),
  so a `Kernel` lists those it causes.
- Common subexpression elimination merges a node identical to an earlier one (NAS-Bench-201
  applies ReLU to the same tensor once per outgoing edge); Shape of a static shape is folded.
- HardSwish is not fused, but hwnas's fuse-activations pass marks Conv+HardSwish as one node,
  so the kernel hwnas prices includes it (and calibration measures it that way).
- A node hwnas quantized to an 8-bit integer kernel (`integer`: a Conv, Gemm or MatMul with
  8-bit data, narrow weights and an output grid, or an Add on grids) runs as QLinearConv, QGemm,
  QLinearMatMul or QLinearAdd in NHWC: it absorbs only a Relu or Clip before its output's
  QuantizeLinear, takes in no residual, and has no NCHWc reorders of its own. A Relu or Clip
  read only by such kernels (their input grid's zero point 0) is dropped.

Checked against onnxruntime's own optimized graphs on 51 of the benchmark's networks: reorder
and kernel counts agree on all but two light models (DenseNet-121, Inception-v2), where
onnxruntime leaves some Conv+BatchNormalization pairs unfused, probably because it merged their
identical dummy weights.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from hwnas.backends.emit.qdq import GRID_PRESERVING, tensor_grids
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import traits

# onnxruntime's own rules (which activations its conv kernels fuse, which ops keep NCHWc), not
# op traits; what the op is (a view, a pool) comes from the registry.
ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "LeakyRelu", "Tanh", "HardSigmoid")
AFFINE = ("Mul", "Add", "Sub", "Div")
INTEGER_ACTIVATIONS = ("Relu", "Clip")
UNARY_BLOCKED = ("Relu", "Sigmoid", "LeakyRelu", "Tanh", "HardSigmoid", "HardSwish")
BLOCK = 16


@dataclass(frozen=True)
class Reorder:
    """A layout conversion onnxruntime inserts: NCHW -> NCHWc (`to_nchwc`) or back."""

    to_nchwc: bool
    shape: tuple[int, int, int]
    """(C, H, W) of the tensor converted."""


@dataclass(frozen=True)
class Kernel:
    """A node that heads its own kernel: whether it also adds a residual, the activation it
    applies last, and the reorders charged to it."""

    sum_fused: bool = False
    act: str | None = None
    reorders: tuple[Reorder, ...] = ()


ABSORBED = None


def memory_bytes(node: Node) -> int:
    """Bytes of the graph's weights and inputs: what one run streams through besides the
    activations (which reuse a few buffers), and so what may evict a layer's weights from the
    caches between two of its runs. (Adding the activations' peak made predictions worse.)"""
    return view_of(node.graph).memory_bytes if node.graph is not None else 0


def role(node: Node) -> Kernel | None:
    """The kernel `node` heads, or ABSORBED (None) when onnxruntime runs it inside another."""
    if node.graph is None:
        return Kernel(act=_hwnas_act(node))
    return view_of(node.graph).roles.get(id(node), Kernel(act=_hwnas_act(node)))


_VIEWS: weakref.WeakKeyDictionary[Graph, tuple[tuple, OrtView]] = weakref.WeakKeyDictionary()


def view_of(graph: Graph) -> OrtView:
    """The graph's analysis, cached until its nodes, outputs or quantization annotations change
    (a pass that only edits other annotations of an already-priced graph is not noticed)."""
    key = (tuple(id(n) for n in graph.nodes), tuple(id(v) for v in graph.outputs),
           tuple(n.ann.quant for n in graph.nodes))
    hit = _VIEWS.get(graph)
    if hit is None or hit[0] != key:
        hit = (key, OrtView(graph))
        _VIEWS[graph] = hit
    return hit[1]


@dataclass
class _Group:
    head: Node
    act: str | None = None
    sum_fused: bool = False
    act_only: bool = False
    """Absorbs only an activation: a Gemm (FusedGemm), or a BatchNormalization or per-channel
    Mul that onnxruntime turned into a 1x1 depthwise NCHWc conv."""
    blocked: bool = True
    """Its output is NCHWc; only such convs take in a residual sum."""
    integer: bool = False
    """An 8-bit integer kernel: absorbs only a Relu or Clip (its output grid's range)."""


@dataclass
class OrtView:
    """One forward pass over the graph in order: common subexpressions, fusion groups, layouts
    and the reorders each kernel causes, keyed by node and value ids."""

    graph: Graph
    roles: dict[int, Kernel | None] = field(default_factory=dict)
    nchwc: dict[int, bool] = field(default_factory=dict)
    memory_bytes: int = 0
    gridded: set[int] = field(default_factory=set)
    """Values the QDQ emission puts on an 8-bit grid (`tensor_grids`): what onnxruntime can run
    integer kernels on."""

    def __post_init__(self) -> None:
        if any(n.ann.quant is not None for n in self.graph.nodes):
            self.gridded = {id(v) for v in tensor_grids(self.graph)}
        self._alias: dict[int, Value] = {}
        counted: set[int] = set()
        self._owner: dict[int, Node] = {}
        self._open: dict[int, _Group] = {}
        self._groups: dict[int, _Group] = {}
        self._charges: dict[int, list[Reorder]] = {}
        self._converted: set[tuple[int, bool]] = set()
        seen: dict[tuple, Node] = {}
        outputs = {id(v) for v in self.graph.outputs}
        for node in self.graph.nodes:
            dyn = [self._canon(v) for v in node.inputs if v is not None and not static(v)]
            if not dyn or not node.outputs:
                continue  # folded at compile time
            for v in node.inputs:
                if v is not None and id(v) not in counted and v.type is not None and v.type.dtype.is_float \
                        and static(v):
                    counted.add(id(v))
                    self.memory_bytes += v.type.nbytes() or 0
            if node.op in ("Shape", "Size") and not node.domain:
                self.roles[id(node)] = ABSORBED  # static shapes: folded when the session starts
                continue
            if traits(node).view:
                self._need(dyn[0], False, node)
                self._alias[id(node.outputs[0])] = dyn[0] if node.op in ("Identity", "Dropout") else node.outputs[0]
                continue
            sig = (node.op, node.domain, tuple(id(self._canon(v)) if v is not None else 0 for v in node.inputs),
                   tuple(sorted((k, repr(a.value)) for k, a in node.attrs.items())))
            if sig in seen:  # common subexpression: reuse the earlier node's outputs
                for mine, theirs in zip(node.outputs, seen[sig].outputs, strict=False):
                    self._alias[id(mine)] = self._canon(theirs)
                self.roles[id(node)] = ABSORBED
                continue
            seen[sig] = node
            if node.op in INTEGER_ACTIVATIONS and not node.domain and _requantized(node):
                # Relu/Clip before a QuantizeLinear with zero point 0: onnxruntime drops it.
                self.roles[id(node)] = ABSORBED
                self._need(dyn[0], False, node)
                self.nchwc[id(node.outputs[0])] = False
                continue
            if integer(node):
                self.roles[id(node)] = Kernel()
                for v in dyn:
                    self._need(v, False, node)
                group = _Group(node, act_only=True, blocked=False, integer=True)
                self._groups[id(node)] = group
                self._open[id(node.outputs[0])] = group
                self.nchwc[id(node.outputs[0])] = False
                self._owner[id(node.outputs[0])] = node
                continue
            if self._absorb(node, dyn, outputs):
                continue
            self.roles[id(node)] = Kernel()
            self._place(node, dyn)
        self.memory_bytes += sum((v.type.nbytes() or 0) for v in self.graph.inputs if v.type is not None)
        for v in self.graph.outputs:
            self._need(self._canon(v), False, None)
        for key, group in self._groups.items():
            self.roles[key] = Kernel(group.sum_fused, _hwnas_act(group.head) or group.act)
        for key, kernel in list(self.roles.items()):
            charges = self._charges.get(key)
            if kernel is not None and charges:
                self.roles[key] = Kernel(kernel.sum_fused, kernel.act, tuple(charges))

    def _canon(self, v: Value) -> Value:
        return self._alias.get(id(v), v)

    def _absorb(self, node: Node, dyn: list[Value], outputs: set[int]) -> bool:
        """Whether an open conv group takes `node` in (ConvBN/Mul/Add, residual sum, activation)."""
        for i, x in enumerate(dyn):
            group = self._open.get(id(x))
            if group is None or len(x.uses) != 1 or id(x) in outputs:
                continue
            acts = INTEGER_ACTIVATIONS if group.integer else ACTIVATIONS
            if group.act_only and not (i == 0 and len(dyn) == 1 and group.act is None and node.op in acts):
                continue
            if group.act_only:
                group.act = node.op
            elif i == 0 and group.act is None and not group.sum_fused and _const_affine(node, len(dyn), x):
                pass
            elif _residual(node, dyn) and group.blocked and group.act is None and not group.sum_fused:
                other = dyn[1 - i]
                if not self.nchwc.get(id(other), False):
                    continue
                group.sum_fused = True
            elif i == 0 and len(dyn) == 1 and group.act is None and (
                    node.op == "Relu" or (node.op in ACTIVATIONS and not group.sum_fused)):
                group.act = node.op
            else:
                continue
            out = node.outputs[0]
            del self._open[id(x)]
            self._open[id(out)] = group
            self._owner[id(out)] = group.head
            self.nchwc[id(out)] = group.blocked
            self.roles[id(node)] = ABSORBED
            return True
        return False

    def _place(self, node: Node, dyn: list[Value]) -> None:
        """The node's output layout, and the reorders its inputs need."""
        op = "" if node.domain else node.op
        pool = traits(node).pool
        channels = _shape(node.outputs[0])[0]
        blocked = False
        if op == "Conv" and _conv_2d(node):
            # NCHWc needs input channels in fours (or fewer than 16: those convs read NCHW input
            # directly); a depthwise conv always reads NCHWc. Others run as plain NCHW convs.
            cin = _shape(dyn[0])[0]
            groups = node.attr_int("group", 1)
            depthwise = groups == cin > 1
            cout = _shape(node.outputs[0])[0]
            if depthwise:
                blocked = cin % 4 == 0
            elif groups > 1:  # blocks must not straddle groups
                blocked = (cin // groups) % BLOCK == 0 and (cout // groups) % BLOCK == 0
            else:
                blocked = cin < BLOCK or cin % 4 == 0
            if blocked:
                self._need(dyn[0], cin >= BLOCK or depthwise, node)
            self._open_group(node, act_only=False, blocked=blocked)
        elif op in ("BatchNormalization", "Mul") and len(dyn) == 1 and self.nchwc.get(id(dyn[0]), False) and (
                op == "BatchNormalization" or _per_channel(node, dyn[0])):
            # An NCHWc tensor's BatchNormalization or per-channel Mul becomes a 1x1 depthwise conv.
            blocked = True
            self._open_group(node, act_only=True)
        elif op == "Gemm":
            self._open_group(node, act_only=True, blocked=False)
        elif pool is not None and pool.reduce != "lp" and channels % BLOCK == 0 and (
                not pool.whole or self.nchwc.get(id(dyn[0]), False)):
            # NCHWc max and average pools; global ones only on input that already is NCHWc.
            self._need(dyn[0], True, node)
            blocked = True
        elif op == "Concat" and all(self.nchwc.get(id(v), False) and _shape(v)[0] % BLOCK == 0 and len(v.uses) == 1
                                    for v in dyn):
            blocked = True
        elif op in UNARY_BLOCKED:
            blocked = self.nchwc.get(id(dyn[0]), False)
        elif op in ("Add", "Sum", "Mul") and len(dyn) == len(node.inputs) >= 2 and len({v.type for v in dyn}) == 1:
            blocked = all(self.nchwc.get(id(v), False) for v in dyn)
        for v in dyn:
            if not blocked:
                self._need(v, False, node)
        for out in node.outputs:
            self.nchwc[id(out)] = blocked
            self._owner[id(out)] = node

    def _open_group(self, node: Node, act_only: bool, blocked: bool = True) -> None:
        group = _Group(node, act_only=act_only, blocked=blocked)
        self._groups[id(node)] = group
        self._open[id(node.outputs[0])] = group

    def _need(self, v: Value, blocked: bool, consumer: Node | None) -> None:
        """`consumer` reads `v` in this layout: charge a reorder when `v` is in the other one
        (ReorderInput to the consumer; ReorderOutput to the kernel that produced `v`)."""
        if self.nchwc.get(id(v), False) == blocked or (id(v), blocked) in self._converted:
            return
        self._converted.add((id(v), blocked))
        payer = consumer if blocked else self._owner.get(id(v))
        if payer is not None:
            self._charges.setdefault(id(payer), []).append(Reorder(blocked, _shape(v)))


def integer(node: Node) -> bool:
    """onnxruntime runs the node's QDQ form (hwnas.backends.emit.qdq) as an 8-bit integer kernel:
    a Conv, Gemm or MatMul with 8-bit data and weights of at most 8 bits (stored in int8), with
    an output grid for a Conv (a Gemm or MatMul without one writes float: QGemm,
    MatMulIntegerToFloat), or an Add whose inputs and output are on grids (QLinearAdd)."""
    q = node.ann.quant
    if q is None or node.domain:
        return False
    if node.op == "Add":
        return q.o_scale is not None and not q.w_bits and not q.a_bits
    if node.op == "Conv" and q.o_scale is None:
        return False
    return node.op in ("Conv", "Gemm", "MatMul") and q.a_bits == 8 and bool(q.w_bits) and (q.w_bits or 9) <= 8


EDGE_OPS = ("QuantizeLinear", "DequantizeLinear", "Transpose")
"""What onnxruntime runs where an integer kernel meets float tensors: into uint8 and back, and
(for convolutions, which run NHWC) NCHW to NHWC and back."""


def integer_edges(node: Node) -> tuple[tuple[int, int, int], ...]:
    """The edge nodes (`EDGE_OPS`) onnxruntime runs for the integer kernel `node` where it meets
    float tensors, as (index in EDGE_OPS, elements, last dimension of the node's input): a
    QuantizeLinear (and an NCHW->NHWC Transpose for a conv) on a data input that no integer
    kernel wrote, charged to its first integer reader; a DequantizeLinear (and a Transpose back
    for 4-D tensors) on an output grid that a float node or the graph output reads."""
    edges: list[tuple[int, int, int]] = []
    data = list(node.inputs[:2]) if node.op == "Add" else [node.input(0)]
    gridded = view_of(node.graph).gridded if node.graph is not None else set()
    for x in data:
        if x is None or _integer_source(x, gridded):
            continue
        first = next((u for u, _ in x.uses if integer(u)), None)
        if first is not node:
            continue
        n, last = _size(x)
        edges.append((0, n, last))
        if node.op == "Conv" and _rank(x) == 4:
            edges.append((2, n, last))
    q = node.ann.quant
    if q is None or q.o_scale is None:
        return tuple(edges)
    out = node.outputs[0]
    if len(out.uses) == 1 and out.uses[0][0].op in INTEGER_ACTIVATIONS and not out.uses[0][0].domain:
        out = out.uses[0][0].outputs[0]
    graph = node.graph
    if (graph is not None and any(o is out for o in graph.outputs)) or not _integer_readers(out, gridded):
        n, last = _size(out)
        edges.append((1, n, last))
        if _rank(out) == 4:
            edges.append((2, n, _shape(out)[0]))  # its input is NHWC: channels last
    return tuple(edges)


def _requantized(node: Node) -> bool:
    """Only integer kernels read the activation's output, each as its data input on a grid with
    zero point 0 (what a Relu's or Clip's range gives): onnxruntime removes the activation
    (ReluQuantFusion, ClipQuantFusion) and quantizes its input directly."""
    out = node.outputs[0]
    readers = out.uses
    graph = node.graph
    if graph is not None and any(o is out for o in graph.outputs):
        return False
    return bool(readers) and all(
        i == 0 and integer(u) and u.op != "Add" and u.ann.quant is not None and u.ann.quant.a_zero_point == 0
        for u, i in readers)


def _integer_source(v: Value, gridded: set[int]) -> bool:
    """An integer kernel wrote `v`, maybe through an absorbed Relu/Clip or ops that onnxruntime runs
    on integers (those between two grids: MaxPool, GlobalAveragePool, ...)."""
    p = v.producer
    while p is not None and not integer(p):
        x = p.input(0)
        on_grids = id(v) in gridded and x is not None and id(x) in gridded
        if p.domain or x is None or not (on_grids or p.op in INTEGER_ACTIVATIONS or p.op in GRID_PRESERVING):
            return False
        v, p = x, x.producer
    return p is not None


def _integer_readers(v: Value, gridded: set[int], depth: int = 6) -> bool:
    """Every reader of `v` is an integer kernel, or an op onnxruntime runs on integers because
    its output is on a grid too (through ops that move values)."""
    for u, _ in v.uses:
        if integer(u) or (u.outputs and all(id(o) in gridded for o in u.outputs)):
            continue
        if u.op in GRID_PRESERVING and not u.domain and depth > 0 and u.outputs and u.outputs[0].uses \
                and _integer_readers(u.outputs[0], gridded, depth - 1):
            continue
        return False
    return True


def _size(v: Value) -> tuple[int, int]:
    n = (v.type.numel() or 0) if v.type is not None else 0
    shape = v.shape or ()
    last = shape[-1] if shape and isinstance(shape[-1], int) else 1
    return n, last


def _rank(v: Value) -> int:
    return len(v.shape or ())


def static(v: Value, depth: int = 4) -> bool:
    """Known before run time (a weight, or computed from weights a few steps back); unlike
    `is_static`, this never walks a whole network back to its input."""
    if v.const is not None:
        return True
    p = v.producer
    if p is None or depth == 0 or not p.inputs:
        return p is not None and not p.inputs and p.op == "Constant"
    return all(x is None or static(x, depth - 1) for x in p.inputs)


def _hwnas_act(node: Node) -> str | None:
    fa = node.ann.fused_activation
    return fa.op if fa is not None else None


def _shape(v: Value) -> tuple[int, int, int]:
    """(C, N·H, W) of an activation, the batch folded into the rows (a reorder of 16 images is 16
    reorders); 1 for missing or unknown dims."""
    shape = v.shape or ()
    dims = [d if isinstance(d, int) else 1 for d in shape[:4]]
    n, c, h, w = dims + [1] * (4 - len(dims))
    return c, n * h, w


def _conv_2d(node: Node) -> bool:
    w = node.input(1)
    return w is not None and static(w) and w.type is not None and w.type.rank == 4


def _const_affine(node: Node, n_dynamic: int, x: Value) -> bool:
    if node.domain or n_dynamic != 1:
        return False
    if node.op == "BatchNormalization":
        return node.input(0) is x
    if node.op not in AFFINE or len(node.inputs) != 2 or (node.op in ("Sub", "Div") and node.input(0) is not x):
        return False
    other = node.input(1) if node.input(0) is x else node.input(0)
    n = other.type.numel() if other is not None and other.type is not None else None
    return n is not None and (n == 1 or n == _shape(x)[0])


def _per_channel(node: Node, x: Value) -> bool:
    """A Mul by a constant of one value per channel (not a scalar: that one stays NCHW)."""
    other = node.input(1) if node.input(0) is x else node.input(0)
    n = other.type.numel() if other is not None and other.type is not None else None
    return n == _shape(x)[0] and n != 1


def _residual(node: Node, dyn: list[Value]) -> bool:
    return (node.op in ("Add", "Sum") and not node.domain and len(node.inputs) == 2 and len(dyn) == 2
            and dyn[0].type == dyn[1].type)
