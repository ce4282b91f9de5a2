"""Which channels must be pruned together: the analysis behind `prune-channels`.

Structured pruning works on *channel atoms*: one atom per channel of every tensor that
carries channels (NCHW axis 1, the feature axis of a matrix). Ops tie atoms together, as
DepGraph (Fang et al., CVPR 2023) does with layers: element-wise ops and BatchNorm tie
channel c of their inputs and output, a residual Add ties its branches, Concat and Split
tie at offsets, Flatten ties channel c to its c·HW … (c+1)·HW − 1 features, a depthwise
convolution ties each input channel to its filters, a grouped convolution ties the channels
at the same position of every group (so the groups stay equal). A connected component of
atoms is one channel that can only be removed whole; components are grouped by the layers
that produce them (a residual stage's convolutions form one group, pruned together). A
component that touches a graph output, an op hwnas does not know how to slice, or a tensor
shared in a way that cannot be sliced consistently is kept.

Op handlers are the `_op_<Op>` methods (and the UNARY / PER_CHANNEL_PARAMS / ELEMENTWISE
tables); an op with none blocks the channels it reads.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hwnas.ir.annotations import SparsitySpec
from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import refresh_types
from hwnas.ir.types import TensorType

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")

UNARY = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "Elu", "Selu", "Softplus",
    "Softsign", "Gelu", "Mish", "Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "LpPool", "Neg", "Abs", "Sqrt", "Exp", "Log", "Floor", "Ceil", "Round", "Cast", "Sign",
    "Reciprocal", "Erf", "ThresholdedRelu", "Celu", "Resize", "Upsample", "Pad",
}
"""Ops whose output channel c depends on input channel c alone (extra inputs are scalars
or shapes: Clip bounds, Resize scales on spatial axes, Pad amounts off the channel axis)."""
PER_CHANNEL_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "PRelu": (1,)}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "Where"}
SHAPE_ONLY = {"Shape", "Size"}


def weight_nodes(graph: Graph) -> list[Node]:
    """Conv, Gemm and MatMul nodes whose weight (input 1) is a float constant."""
    out = []
    for n in graph.nodes:
        w = n.input(1)
        if not n.domain and n.op in WEIGHT_OPS and w is not None and w.const is not None \
                and w.const.dtype.kind == "f" and w.const.size > 1:
            out.append(n)
    return out


def set_const(graph: Graph, node: Node, i: int, array: np.ndarray, suffix: str) -> None:
    old = node.input(i)
    node.set_input(i, graph.add_constant(np.ascontiguousarray(array), f"{node.name}_{suffix}"))
    graph.drop_if_unused(old)



@dataclass
class ChannelGroup:
    """Channels that are pruned together: produced by `sources` (node names)."""

    name: str
    sources: tuple[str, ...]
    components: list[int] = field(default_factory=list)
    """Prunable component ids: one per channel of the group, or per channel position shared
    by every group of a grouped convolution."""
    kept: int = 0
    """Channels that must stay (they reach a graph output or an op that cannot be sliced)."""
    cost: float = 0.0
    """Weight elements one removed channel takes with it (filters, input slices, BN)."""

    @property
    def channels(self) -> int:
        return len(self.components) + self.kept

    def removable(self, ratio: float, multiple: int = 1) -> int:
        """How many channels pruning `ratio` of the group takes: floor(ratio × channels),
        fewer when the kept count is rounded up to a multiple of `multiple` (kernels run
        best on channel counts their vector width divides), never all of them and never
        one that must stay."""
        keep = self.channels - math.floor(ratio * self.channels + 1e-9)
        if multiple > 1:
            keep = min(self.channels, math.ceil(keep / multiple) * multiple)
        return max(0, min(self.channels - max(keep, 1), len(self.components)))


@dataclass
class _Slice:
    """Slice `node.input(index)` (a constant) along `axis` by the channels of `value` removed
    (by their positions modulo `period` when it is set: a grouped convolution's weight holds
    one input group's channels, which every group shares)."""

    node: Node
    index: int
    axis: int
    value: Value
    period: int = 0


def private_weights(graph: Graph) -> bool:
    """Makes every weight and per-channel parameter a constant of its own node: weights built
    at run time (ConstantOfShape, Identity of a shared tensor, as exporters write) are folded,
    and a constant read by several nodes is copied for each; types are re-inferred. Exact;
    slicing needs it. Returns whether the graph changed."""
    from hwnas.passes.fold_constants import FoldConstants

    changed = FoldConstants(max_elements=2**62).run(graph).changed
    changed = refresh_types(graph) or changed  # shapes computed at run time (pads, say) may be known now
    for n in graph.nodes:
        if n.domain or n.op not in (*WEIGHT_OPS, *PER_CHANNEL_PARAMS, *ELEMENTWISE):
            continue
        for i, v in enumerate(n.inputs):
            if v is not None and v.const is not None and v.const.size > 1 and len(v.uses) > 1:
                n.set_input(i, graph.add_constant(v.const.copy(), v.name))
                changed = True
    return changed


class ChannelAnalysis:
    """Ties channel atoms as the ops demand; see the module docstring. Makes the graph's
    weights private constants first (`private_weights`)."""

    def __init__(self, graph: Graph):
        private_weights(graph)
        self.graph = graph
        self.base: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.axis: dict[int, int] = {}
        self.values: dict[int, Value] = {}
        self.n_atoms = 0
        self.edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.blocked: list[np.ndarray] = []
        self.sources: list[tuple[Node, Value]] = []
        self.slices: list[_Slice] = []
        self.fixups: list[tuple[Node, Callable[[Callable[[Value], np.ndarray]], None]]] = []
        for n in graph.nodes:
            self._node(n)
        for v in graph.outputs:
            self._block(v)
        self._components()

    # -- atoms
    def _track(self, v: Value, axis: int) -> bool:
        if v.type is None or v.type.shape is None or not v.type.shape:
            return False
        shape = v.type.shape
        axis = axis % len(shape)
        if not isinstance(shape[axis], int):
            return False
        self.base[id(v)], self.size[id(v)], self.axis[id(v)] = self.n_atoms, int(shape[axis]), axis
        self.values[id(v)] = v
        self.n_atoms += int(shape[axis])
        return True

    def tracked(self, v: Value | None) -> bool:
        return v is not None and id(v) in self.base

    def atoms(self, v: Value) -> np.ndarray:
        return np.arange(self.size[id(v)]) + self.base[id(v)]

    def _tie(self, a: np.ndarray, b: np.ndarray) -> None:
        self.edges.append((np.asarray(a), np.asarray(b)))

    def _block(self, v: Value | None) -> None:
        if self.tracked(v):
            self.blocked.append(self.atoms(v))  # type: ignore[arg-type]

    def _block_all(self, n: Node) -> None:
        for v in n.inputs:
            self._block(v)

    # -- ops
    def _node(self, n: Node) -> None:
        if n.domain:
            return self._block_all(n)
        handler = getattr(self, f"_op_{n.op}", None)
        if handler is not None:
            return handler(n)
        if n.op in UNARY or n.op in PER_CHANNEL_PARAMS:
            return self._unary(n)
        if n.op in ELEMENTWISE:
            return self._elementwise(n)
        if n.op in SHAPE_ONLY:
            return None
        self._block_all(n)

    def _weight_ok(self, n: Node) -> bool:
        w = n.input(1)
        b = n.input(2) if n.op != "MatMul" else None
        return (w is not None and w.const is not None and len(w.uses) == 1
                and (b is None or (b.const is not None and len(b.uses) == 1)))

    def _op_Conv(self, n: Node) -> None:
        x, out = n.input(0), n.outputs[0]
        if not self._weight_ok(n):
            return self._block_all(n)
        w = n.input(1).const  # type: ignore[union-attr]
        groups = int(n.attr("group", 1))  # type: ignore[arg-type]
        c_in = w.shape[1] * groups
        if self.tracked(x) and self.axis[id(x)] != 1:
            return self._block_all(n)
        if groups == 1:
            if self.tracked(x):
                self.slices.append(_Slice(n, 1, 1, x))  # type: ignore[arg-type]
            if self._track(out, 1):
                self.sources.append((n, out))
                self.slices.append(_Slice(n, 1, 0, out))
                self._bias(n, out)
            return None
        if groups == c_in and w.shape[1] == 1 and self.tracked(x):
            # Depthwise: filters c·m … c·m+m−1 read input channel c alone.
            m = w.shape[0] // groups
            if self._track(out, 1):
                src = np.repeat(self.atoms(x), m)  # type: ignore[arg-type]
                self._tie(src, self.atoms(out))
                self.slices.append(_Slice(n, 1, 0, out))
                self._bias(n, out)

                def regroup(removed: Callable[[Value], np.ndarray], n: Node = n, x: Value = x) -> None:  # type: ignore[assignment]
                    n.attrs["group"] = Attr.int(self.size[id(x)] - len(removed(x)))
                self.fixups.append((n, regroup))
            return None
        # Grouped convolution: every group must keep as many channels as the others, so the
        # channels at the same position of every group go together, on both sides.
        per_in, per_out = w.shape[1], w.shape[0] // groups
        if self.tracked(x):
            self._tie_across_groups(self.atoms(x), groups, per_in)  # type: ignore[arg-type]
            self.slices.append(_Slice(n, 1, 1, x, per_in))  # type: ignore[arg-type]
        if self._track(out, 1):
            self.sources.append((n, out))
            self._tie_across_groups(self.atoms(out), groups, per_out)
            self.slices.append(_Slice(n, 1, 0, out))
            self._bias(n, out)
        return None

    def _tie_across_groups(self, atoms: np.ndarray, groups: int, per_group: int) -> None:
        table = atoms.reshape(groups, per_group)
        for j in range(1, groups):
            self._tie(table[0], table[j])

    def _bias(self, n: Node, out: Value) -> None:
        if n.input(2) is not None and n.input(2).const is not None and n.input(2).const.size > 1:  # type: ignore[union-attr]
            self.slices.append(_Slice(n, 2, n.input(2).const.ndim - 1, out))  # type: ignore[union-attr]

    def _op_Gemm(self, n: Node) -> None:
        x, out = n.input(0), n.outputs[0]
        if not self._weight_ok(n) or n.attr("transA", 0) or (self.tracked(x) and self.axis[id(x)] != 1):
            return self._block_all(n)
        trans_b = bool(n.attr("transB", 0))
        if self.tracked(x):
            self.slices.append(_Slice(n, 1, 1 if trans_b else 0, x))  # type: ignore[arg-type]
        if self._track(out, 1):
            self.sources.append((n, out))
            self.slices.append(_Slice(n, 1, 0 if trans_b else 1, out))
            self._bias(n, out)
        return None

    def _op_MatMul(self, n: Node) -> None:
        x, out = n.input(0), n.outputs[0]
        w = n.input(1)
        if not self._weight_ok(n) or w.const.ndim != 2 or x is None or x.type is None or x.type.shape is None:  # type: ignore[union-attr]
            return self._block_all(n)
        last = len(x.type.shape) - 1
        if self.tracked(x) and self.axis[id(x)] != last:
            return self._block_all(n)
        if self.tracked(x):
            self.slices.append(_Slice(n, 1, 0, x))
        if self._track(out, -1):
            self.sources.append((n, out))
            self.slices.append(_Slice(n, 1, 1, out))
        return None

    def _unary(self, n: Node) -> None:
        x, out = n.input(0), n.outputs[0]
        if not self.tracked(x):
            return self._block_all(n)
        ax = self.axis[id(x)]
        if n.op == "Pad" and not self._pad_ok(n, ax):
            return self._block_all(n)
        if n.op in ("Resize", "Upsample") and not self._scales_ok(n, ax):
            return self._block_all(n)
        params = PER_CHANNEL_PARAMS.get(n.op, ())
        for i in params:
            p = n.input(i)
            if p is None or p.const is None or len(p.uses) != 1 or p.const.size not in (1, self.size[id(x)]):
                return self._block_all(n)
        for i in range(1, len(n.inputs)):
            if i not in params:
                self._block(n.input(i))
        if self._track(out, ax):
            self._tie(self.atoms(x), self.atoms(out))  # type: ignore[arg-type]
            for i in params:
                if n.input(i).const.size > 1:  # type: ignore[union-attr]
                    self.slices.append(_Slice(n, i, n.input(i).const.ndim - 1 if n.op != "PRelu" else 0, x))  # type: ignore[union-attr, arg-type]
        else:
            self._block(x)
        for extra in n.outputs[1:]:
            if extra.uses:
                self._block(x)
        return None

    def _pad_ok(self, n: Node, ax: int) -> bool:
        pads = n.input(1).const if n.input(1) is not None else n.attr("pads")  # type: ignore[union-attr]
        if pads is None:
            return False
        pads = np.asarray(pads).ravel()
        rank = len(pads) // 2
        return rank > ax and pads[ax] == 0 and pads[ax + rank] == 0 and (n.input(3) is None)

    def _scales_ok(self, n: Node, ax: int) -> bool:
        """Scales of 1 on the channel axis; explicit output sizes would go stale."""
        for v in n.inputs[1:]:
            if v is None or v.const is None or v.const.size == 0:
                continue
            if v.const.dtype.kind != "f" or (v.const.ndim == 1 and v.const.size > ax and v.const[ax] != 1):
                return False
        return True

    def _elementwise(self, n: Node) -> None:
        out = n.outputs[0]
        if out.type is None or out.type.shape is None:
            return self._block_all(n)
        rank = len(out.type.shape)
        axes = {self.axis[id(v)] + rank - len(v.type.shape) for v in n.inputs if self.tracked(v)}  # type: ignore[union-attr]
        if len(axes) != 1:
            return self._block_all(n)
        ax = axes.pop()
        c = out.type.shape[ax]
        tied, consts = [], []
        for i, v in enumerate(n.inputs):
            if v is None:
                continue
            shape = v.type.shape if v.type is not None and v.type.shape is not None else None
            if shape is None:
                return self._block_all(n)
            pos = ax - (rank - len(shape))
            here = shape[pos] if pos >= 0 else 1
            if self.tracked(v):
                if here != c:
                    return self._block_all(n)
                tied.append(v)
            elif here != 1:
                if v.const is None or len(v.uses) != 1 or n.op == "Where":
                    return self._block_all(n)
                consts.append((i, pos))
        if not self._track(out, ax):
            return self._block_all(n)
        for v in tied:
            self._tie(self.atoms(v), self.atoms(out))
        for i, pos in consts:
            self.slices.append(_Slice(n, i, pos, out))
        return None

    def _op_Concat(self, n: Node) -> None:
        out = n.outputs[0]
        if out.type is None or out.type.shape is None or not all(self.tracked(v) for v in n.inputs):
            return self._block_all(n)
        axis = int(n.attr("axis")) % len(out.type.shape)  # type: ignore[arg-type]
        axes = {self.axis[id(v)] for v in n.inputs}  # type: ignore[arg-type]
        if axes != {axis} or not self._track(out, axis):
            return self._block_all(n)
        offset = 0
        for v in n.inputs:
            a = self.atoms(v)  # type: ignore[arg-type]
            self._tie(a, self.atoms(out)[offset:offset + len(a)])
            offset += len(a)
        return None

    def _op_Split(self, n: Node) -> None:
        x = n.input(0)
        if not self.tracked(x) or x.type is None or x.type.shape is None:  # type: ignore[union-attr]
            return self._block_all(n)
        axis = int(n.attr("axis", 0)) % len(x.type.shape)  # type: ignore[union-attr, arg-type]
        if axis != self.axis[id(x)] or (n.input(1) is not None and n.input(1).const is None):  # type: ignore[union-attr]
            return self._block_all(n)
        offset = 0
        atoms = self.atoms(x)  # type: ignore[arg-type]
        for o in n.outputs:
            if not self._track(o, axis):
                return self._block_all(n)
            k = self.size[id(o)]
            self._tie(atoms[offset:offset + k], self.atoms(o))
            offset += k

        def resplit(removed: Callable[[Value], np.ndarray], n: Node = n) -> None:  # type: ignore[assignment]
            sizes = np.array([self.size[id(o)] - len(removed(o)) for o in n.outputs], np.int64)
            if n.input(1) is not None:
                set_const(n.graph, n, 1, sizes, "split")  # type: ignore[arg-type]
            else:
                n.attrs["split"] = Attr.ints(sizes.tolist())
        self.fixups.append((n, resplit))
        return None

    def _flatten_like(self, n: Node, x: Value, out: Value) -> bool:
        """x (N, C, ...) → out (N, C·k) with channel c at features c·k … c·k + k − 1."""
        xs, os_ = x.type.shape, out.type.shape  # type: ignore[union-attr]
        if not self.tracked(x) or self.axis[id(x)] != 1 or os_ is None or len(os_) != 2 or xs is None:
            return False
        k = int(np.prod(xs[2:])) if len(xs) > 2 else 1
        if os_[0] != xs[0] or os_[1] != xs[1] * k or not self._track(out, 1):
            return False
        self._tie(np.repeat(self.atoms(x), k), self.atoms(out))
        return True

    def _op_Flatten(self, n: Node) -> None:
        x = n.input(0)
        if int(n.attr("axis", 1)) != 1 or not self._flatten_like(n, x, n.outputs[0]):  # type: ignore[arg-type]
            self._block_all(n)

    def _op_Reshape(self, n: Node) -> None:
        x, shape = n.input(0), n.input(1)
        if shape is not None and shape.const is None and self._flatten_at_run_time(x, shape, n.outputs[0]):
            return None
        if shape is None or shape.const is None or len(shape.uses) != 1 or not self._flatten_like(n, x, n.outputs[0]):  # type: ignore[arg-type]
            return self._block_all(n)
        if shape.const.size == 2 and shape.const[1] > 0:
            def reshape(removed: Callable[[Value], np.ndarray], n: Node = n) -> None:  # type: ignore[assignment]
                s = n.input(1).const.copy()  # type: ignore[union-attr]
                s[1] = -1
                set_const(n.graph, n, 1, s, "shape")  # type: ignore[arg-type]
            self.fixups.append((n, reshape))
        return None

    def _flatten_at_run_time(self, x: Value | None, shape: Value, out: Value) -> bool:
        """`x.view(x.size(0), -1)` as exporters write it: the shape is Concat(batch, [-1]),
        so it follows the channels by itself. The output's feature count becomes known."""
        p = shape.producer
        tail = p.input(1) if p is not None and p.op == "Concat" and len(p.inputs) == 2 else None
        xs = x.type.shape if x is not None and x.type is not None else None
        if tail is None or tail.const is None or tail.const.tolist() != [-1] or xs is None or len(xs) < 2 \
                or not all(isinstance(d, int) for d in xs[1:]) or out.type is None:
            return False
        out.type = TensorType(out.type.dtype, (xs[0], int(np.prod(xs[1:]))))
        if not self._flatten_like(None, x, out):  # type: ignore[arg-type]
            return False

        def retype(removed: Callable[[Value], np.ndarray], out: Value = out) -> None:
            out.type = TensorType(out.type.dtype, (xs[0], self.size[id(out)] - len(removed(out))))  # type: ignore[union-attr]
        self.fixups.append((out.producer, retype))  # type: ignore[arg-type]
        return True

    def _op_Squeeze(self, n: Node) -> None:
        self._axes_op(n, squeeze=True)

    def _op_Unsqueeze(self, n: Node) -> None:
        self._axes_op(n, squeeze=False)

    def _axes_op(self, n: Node, squeeze: bool) -> None:
        x, out = n.input(0), n.outputs[0]
        if not self.tracked(x) or out.type is None or out.type.shape is None:
            return self._block_all(n)
        axes_v = n.input(1).const if n.input(1) is not None else n.attr("axes")  # type: ignore[union-attr]
        if axes_v is None:
            return self._block_all(n)
        ax = self.axis[id(x)]
        if squeeze:
            axes = {int(a) % len(x.type.shape) for a in np.ravel(axes_v)}  # type: ignore[union-attr]
            if ax in axes:
                return self._block_all(n)
            new = ax - sum(a < ax for a in axes)
        else:
            axes = {int(a) % len(out.type.shape) for a in np.ravel(axes_v)}
            kept = [i for i in range(len(out.type.shape)) if i not in axes]
            new = kept[ax]
        if self._track(out, new):
            self._tie(self.atoms(x), self.atoms(out))  # type: ignore[arg-type]
        else:
            self._block_all(n)
        return None

    def _op_Transpose(self, n: Node) -> None:
        x, out = n.input(0), n.outputs[0]
        if not self.tracked(x):
            return self._block_all(n)
        rank = len(x.type.shape)  # type: ignore[union-attr]
        perm = list(n.attr("perm", list(reversed(range(rank)))))  # type: ignore[arg-type]
        if self._track(out, perm.index(self.axis[id(x)])):
            self._tie(self.atoms(x), self.atoms(out))  # type: ignore[arg-type]
        else:
            self._block(x)
        return None

    def _op_ReduceMean(self, n: Node) -> None:
        x, out = n.input(0), n.outputs[0]
        axes_v = n.input(1).const if n.input(1) is not None else n.attr("axes")  # type: ignore[union-attr]
        if not self.tracked(x) or axes_v is None:
            return self._block_all(n)
        rank = len(x.type.shape)  # type: ignore[union-attr]
        axes = {int(a) % rank for a in np.ravel(axes_v)}
        ax = self.axis[id(x)]
        if ax in axes:
            return self._block_all(n)
        new = ax if n.attr("keepdims", 1) else ax - sum(a < ax for a in axes)
        if self._track(out, new):
            self._tie(self.atoms(x), self.atoms(out))  # type: ignore[arg-type]
        else:
            self._block(x)
        return None

    _op_ReduceSum = _op_ReduceMax = _op_ReduceMin = _op_ReduceMean

    # -- components and groups
    def _components(self) -> None:
        n = self.n_atoms
        if self.edges:
            a = np.concatenate([e[0] for e in self.edges])
            b = np.concatenate([e[1] for e in self.edges])
        else:
            a = b = np.zeros(0, np.int64)
        adj = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
        self.n_components, self.label = connected_components(adj, directed=False)
        self.comp_blocked = np.zeros(self.n_components, bool)
        if self.blocked:
            self.comp_blocked[self.label[np.concatenate(self.blocked)]] = True

    def groups(self) -> list[ChannelGroup]:
        """The layer groups, each with its prunable components and the weight elements one
        removed channel takes with it."""
        comp_sources: dict[int, set[str]] = defaultdict(set)
        for node, v in self.sources:
            for c in np.unique(self.label[self.atoms(v)]):
                comp_sources[int(c)].add(node.name)
        by_key: dict[tuple[str, ...], ChannelGroup] = {}
        for c, names in sorted(comp_sources.items()):
            key = tuple(sorted(names))
            g = by_key.setdefault(key, ChannelGroup("+".join(key), key))
            if self.comp_blocked[c]:
                g.kept += 1
            else:
                g.components.append(c)
        cost = np.zeros(self.n_components)
        for s in self.slices:
            w = s.node.input(s.index).const  # type: ignore[union-attr]
            per_channel = w.size / max(w.shape[s.axis], 1)
            if s.period:  # one weight position per `groups` tied channels
                per_channel *= s.period / self.size[id(s.value)]
            np.add.at(cost, self.label[self.atoms(s.value)], per_channel)
        for g in by_key.values():
            g.cost = float(cost[g.components].mean()) if g.components else 0.0
        return [g for g in by_key.values()]

    def importance(self, criterion: str) -> np.ndarray:
        """One score per component: the norms of the filters it removes, each divided by the
        mean norm of its layer (so layers of different scale compare), summed."""
        score = np.zeros(self.n_components)
        for node, v in self.sources:
            if criterion == "bn":
                bn = next((u for u in v.users if u.op == "BatchNormalization"), None)
                if bn is not None and bn.input(1) is not None and bn.input(1).const is not None:  # type: ignore[union-attr]
                    norms = np.abs(bn.input(1).const.astype(np.float64)).ravel()  # type: ignore[union-attr]
                    np.add.at(score, self.label[self.atoms(v)], norms / max(norms.mean(), 1e-12))
                    continue
            w = node.input(1).const.astype(np.float64)  # type: ignore[union-attr]
            axis = 0 if node.op == "Conv" or (node.op == "Gemm" and node.attr("transB", 0)) else 1
            w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
            norms = np.abs(w).sum(1) if criterion in ("l1", "bn") else np.sqrt((w * w).sum(1))
            np.add.at(score, self.label[self.atoms(v)], norms / max(norms.mean(), 1e-12))
        return score

    # -- rewriting
    def remove(self, components: np.ndarray) -> int:
        """Removes the channels of `components` from every tensor and weight; returns the
        number of channels removed from the sources."""
        drop = np.zeros(self.n_components, bool)
        drop[components] = True
        assert not (drop & self.comp_blocked).any()
        cache: dict[int, np.ndarray] = {}

        def removed(v: Value) -> np.ndarray:
            if id(v) not in cache:
                cache[id(v)] = np.flatnonzero(drop[self.label[self.atoms(v)]])
            return cache[id(v)]

        done: dict[tuple[int, int, int], np.ndarray] = {}
        for s in self.slices:
            idx = removed(s.value)
            if s.period:
                idx = np.unique(idx % s.period)
            if len(idx) == 0:
                continue
            key = (id(s.node), s.index, s.axis)
            if key in done:
                continue
            done[key] = idx
            w = s.node.input(s.index).const  # type: ignore[union-attr]
            set_const(self.graph, s.node, s.index, np.delete(w, idx, axis=s.axis), "pruned")
        for _, fix in self.fixups:
            fix(removed)
        gone = sum(len(removed(v)) for _, v in self.sources)
        for node, v in self.sources:
            keep = self.size[id(v)] - len(removed(v))
            if len(removed(v)):
                old = node.ann.sparsity
                node.ann.sparsity = SparsitySpec(
                    weight_sparsity=old.weight_sparsity if old else 0.0, structured=True, kept_channels=keep)
        refresh_types(self.graph)
        return gone


def channel_groups(graph: Graph) -> list[ChannelGroup]:
    """The groups structured pruning acts on, for inspection and for policies."""
    return ChannelAnalysis(graph).groups()
