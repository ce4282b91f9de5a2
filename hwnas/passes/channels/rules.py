"""One channel rule per op or op family: how the op ties, blocks and slices channel atoms.

Each rule gets the analysis and one node. It ties the atoms of channels that must go together
(`a.tie`), gives outputs that carry channels their atoms (`a.track`), blocks channels it cannot
follow (`a.block`), and records the constants to slice (`a.add_slice`) and the attributes to
edit (`a.add_fixup`) when channels go. Ops without a rule of their own use their registry
category's (`Channels.PER_CHANNEL`, `BROADCAST`, `SHAPE_ONLY`); the rest block.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Node, Value
from hwnas.ir.registry import Channels, traits
from hwnas.passes.channels.analysis import ChannelAnalysis, Removed, Slice, channel_rule, retype
from hwnas.passes.channels.weights import set_const


def _private(v: Value | None) -> bool:
    """A constant that only this node reads (so it can be sliced for it)."""
    return v is not None and v.const is not None and len(v.uses) == 1


def _weight_ok(n: Node) -> bool:
    w = n.input(1)
    b = n.input(2) if n.op != "MatMul" else None
    return _private(w) and (b is None or _private(b))


def _bias(a: ChannelAnalysis, n: Node, out: Value) -> None:
    b = n.input(2)
    if b is not None and b.const is not None and b.const.size > 1:
        a.add_slice(Slice(n, 2, b.const.ndim - 1, out))


def _const(n: Node, i: int) -> np.ndarray:
    c = n.operand(i).const
    assert c is not None, f"{n.name}: input {i} is not a constant"
    return c


# -- layers


@channel_rule("Conv")
def conv(a: ChannelAnalysis, n: Node) -> None:
    """Filters are output channels; the weight's axis 1 reads input channels (one group's, in a
    grouped convolution, whose groups must stay equal); depthwise filters follow their input."""
    x, out = n.input(0), n.outputs[0]
    if not _weight_ok(n) or x is None:
        return a.block_all(n)
    w = _const(n, 1)
    groups = n.attr_int("group", 1)
    c_in = w.shape[1] * groups
    if a.tracked(x) and a.axis(x) != 1:
        return a.block_all(n)
    if groups == 1:
        if a.tracked(x):
            a.add_slice(Slice(n, 1, 1, x))
        if a.track(out, 1):
            a.add_source(n, out)
            a.add_slice(Slice(n, 1, 0, out))
            _bias(a, n, out)
        return None
    if groups == c_in and w.shape[1] == 1 and a.tracked(x):
        # Depthwise: filters c·m … c·m+m−1 read input channel c alone.
        m = w.shape[0] // groups
        if a.track(out, 1):
            a.tie(np.repeat(a.atoms(x), m), a.atoms(out))
            a.add_slice(Slice(n, 1, 0, out))
            _bias(a, n, out)

            def regroup(removed: Removed, n: Node = n, x: Value = x) -> None:
                n.attrs["group"] = Attr.int(a.size(x) - len(removed(x)))

            a.add_fixup(n, regroup)
        return None
    # Grouped convolution: every group must keep as many channels as the others, so the
    # channels at the same position of every group go together, on both sides.
    per_in, per_out = w.shape[1], w.shape[0] // groups
    if a.tracked(x):
        a.tie_across_groups(a.atoms(x), groups, per_in)
        a.add_slice(Slice(n, 1, 1, x, per_in))
    if a.track(out, 1):
        a.add_source(n, out)
        a.tie_across_groups(a.atoms(out), groups, per_out)
        a.add_slice(Slice(n, 1, 0, out))
        _bias(a, n, out)
    return None


@channel_rule("Gemm")
def gemm(a: ChannelAnalysis, n: Node) -> None:
    """Features of A (not transposed) are the weight's input side; outputs are its columns."""
    x, out = n.input(0), n.outputs[0]
    if not _weight_ok(n) or x is None or n.attr_int("transA", 0) or (a.tracked(x) and a.axis(x) != 1):
        return a.block_all(n)
    trans_b = bool(n.attr_int("transB", 0))
    if a.tracked(x):
        a.add_slice(Slice(n, 1, 1 if trans_b else 0, x))
    if a.track(out, 1):
        a.add_source(n, out)
        a.add_slice(Slice(n, 1, 0 if trans_b else 1, out))
        _bias(a, n, out)
    return None


@channel_rule("MatMul")
def matmul(a: ChannelAnalysis, n: Node) -> None:
    """x @ W with a constant 2-D W: the last axis of x and of the output carry channels."""
    x, out = n.input(0), n.outputs[0]
    xs = a.shape(x)
    if not _weight_ok(n) or _const(n, 1).ndim != 2 or x is None or xs is None:
        return a.block_all(n)
    if a.tracked(x) and a.axis(x) != len(xs) - 1:
        return a.block_all(n)
    if a.tracked(x):
        a.add_slice(Slice(n, 1, 0, x))
    if a.track(out, -1):
        a.add_source(n, out)
        a.add_slice(Slice(n, 1, 1, out))
    return None


# -- per channel


def per_channel(a: ChannelAnalysis, n: Node, param_axis: Callable[[np.ndarray], int]) -> None:
    """Output channel c reads input channel c (and parameter c, sliced along `param_axis`)."""
    x, out = n.input(0), n.outputs[0]
    if x is None or not a.tracked(x):
        return a.block_all(n)
    ax = a.axis(x)
    params = traits(n).channel_params
    for i in params:
        p = n.input(i)
        if p is None or not _private(p) or _const(n, i).size not in (1, a.size(x)):
            return a.block_all(n)
    for i in range(1, len(n.inputs)):
        if i not in params:
            a.block(n.input(i))
    if a.track(out, ax):
        a.tie(a.atoms(x), a.atoms(out))
        for i in params:
            values = _const(n, i)
            if values.size > 1:
                a.add_slice(Slice(n, i, param_axis(values), x))
    else:
        a.block(x)
    for extra in n.outputs[1:]:
        if extra.uses:
            a.block(x)
    return None


@channel_rule(Channels.PER_CHANNEL)
def per_channel_last_axis(a: ChannelAnalysis, n: Node) -> None:
    """Activations, pools, BatchNormalization (parameters are 1-D: sliced on their last axis)."""
    per_channel(a, n, lambda p: p.ndim - 1)


@channel_rule("PRelu")
def prelu(a: ChannelAnalysis, n: Node) -> None:
    """PRelu's slope broadcasts against the input from the right: against NCHW input a (C, 1, 1)
    slope is sliced on its first axis, a (1, C, 1, 1) one (Keras exports, MTCNN) on its second.
    A slope that varies along any other axis (a (W,) slope against NCHW) blocks the channels."""
    x, slope = n.input(0), n.input(1)
    xs = a.shape(x) if x is not None and a.tracked(x) else None
    p = slope.const if slope is not None else None
    if x is None or xs is None or p is None:
        return a.block_all(n)
    k = a.axis(x) - (len(xs) - p.ndim)  # the slope's axis that lines up with the channels
    if p.size > 1 and not (0 <= k < p.ndim and p.shape[k] == p.size):
        return a.block_all(n)
    per_channel(a, n, lambda _: k)


@channel_rule("Pad")
def pad(a: ChannelAnalysis, n: Node) -> None:
    """Per channel when nothing is padded on the channel axis (and no axes input)."""
    x = n.input(0)
    if x is None or not a.tracked(x) or not _pad_ok(n, a.axis(x)):
        return a.block_all(n)
    per_channel(a, n, lambda p: p.ndim - 1)


def _pad_ok(n: Node, ax: int) -> bool:
    given = n.input(1)
    pads = given.const if given is not None else (n.attr_ints("pads") if "pads" in n.attrs else None)
    if pads is None:
        return False
    flat = np.asarray(pads).ravel()
    rank = len(flat) // 2
    return rank > ax and flat[ax] == 0 and flat[ax + rank] == 0 and (n.input(3) is None)


@channel_rule("Resize", "Upsample")
def resize(a: ChannelAnalysis, n: Node) -> None:
    """Per channel when the scales on the channel axis are 1; explicit sizes would go stale."""
    x = n.input(0)
    if x is None or not a.tracked(x) or not _scales_ok(n, a.axis(x)):
        return a.block_all(n)
    per_channel(a, n, lambda p: p.ndim - 1)


def _scales_ok(n: Node, ax: int) -> bool:
    for v in n.inputs[1:]:
        if v is None or v.const is None or v.const.size == 0:
            continue
        if v.const.dtype.kind != "f" or (v.const.ndim == 1 and v.const.size > ax and v.const[ax] != 1):
            return False
    return True


# -- element-wise with broadcasting


def broadcast(a: ChannelAnalysis, n: Node, slice_constants: bool) -> None:
    """Ties the channels of every tracked input to the output's; a constant that varies along
    the channel axis is sliced with them (when `slice_constants`), else it blocks."""
    out = n.outputs[0]
    os_ = a.shape(out)
    if os_ is None:
        return a.block_all(n)
    rank = len(os_)
    axes = set()
    for v in n.inputs:
        vs = a.shape(v)
        if v is not None and a.tracked(v) and vs is not None:
            axes.add(a.axis(v) + rank - len(vs))
    if len(axes) != 1:
        return a.block_all(n)
    ax = axes.pop()
    c = os_[ax]
    tied, consts = [], []
    for i, v in enumerate(n.inputs):
        if v is None:
            continue
        shape = a.shape(v)
        if shape is None:
            return a.block_all(n)
        pos = ax - (rank - len(shape))
        here = shape[pos] if pos >= 0 else 1
        if a.tracked(v):
            if here != c:
                return a.block_all(n)
            tied.append(v)
        elif here != 1:
            if not _private(v) or not slice_constants:
                return a.block_all(n)
            consts.append((i, pos))
    if not a.track(out, ax):
        return a.block_all(n)
    for v in tied:
        a.tie(a.atoms(v), a.atoms(out))
    for i, pos in consts:
        a.add_slice(Slice(n, i, pos, out))
    return None


@channel_rule(Channels.BROADCAST)
def broadcast_slicing(a: ChannelAnalysis, n: Node) -> None:
    """A residual Add ties its branches; a per-channel constant operand is sliced."""
    broadcast(a, n, slice_constants=True)


@channel_rule("Where")
def where(a: ChannelAnalysis, n: Node) -> None:
    """Like the arithmetic, but a constant branch is never sliced."""
    broadcast(a, n, slice_constants=False)


@channel_rule(Channels.SHAPE_ONLY)
def shape_only(a: ChannelAnalysis, n: Node) -> None:
    """Reads the shape alone: the channels it reads stay free (the types follow a pruning)."""
    return None


# -- data movement


@channel_rule("Concat")
def concat(a: ChannelAnalysis, n: Node) -> None:
    """Along the channel axis: input k's channels are the output's at its offset."""
    out = n.outputs[0]
    os_ = a.shape(out)
    inputs = [v for v in n.inputs if v is not None]
    if os_ is None or len(inputs) != len(n.inputs) or not all(a.tracked(v) for v in inputs):
        return a.block_all(n)
    axis = n.attr_int("axis", 0) % len(os_)
    if {a.axis(v) for v in inputs} != {axis} or not a.track(out, axis):
        return a.block_all(n)
    offset = 0
    for v in inputs:
        atoms = a.atoms(v)
        a.tie(atoms, a.atoms(out)[offset:offset + len(atoms)])
        offset += len(atoms)
    return None


@channel_rule("Split")
def split(a: ChannelAnalysis, n: Node) -> None:
    """Along the channel axis: output k's channels are the input's at its offset; the split
    sizes are rewritten."""
    x = n.input(0)
    xs = a.shape(x)
    sizes = n.input(1)
    if x is None or not a.tracked(x) or xs is None:
        return a.block_all(n)
    axis = n.attr_int("axis", 0) % len(xs)
    if axis != a.axis(x) or (sizes is not None and sizes.const is None):
        return a.block_all(n)
    offset = 0
    atoms = a.atoms(x)
    for o in n.outputs:
        if not a.track(o, axis):
            return a.block_all(n)
        k = a.size(o)
        a.tie(atoms[offset:offset + k], a.atoms(o))
        offset += k

    def resplit(removed: Removed, n: Node = n) -> None:
        kept = np.array([a.size(o) - len(removed(o)) for o in n.outputs], np.int64)
        if n.input(1) is not None:
            set_const(a.graph, n, 1, kept, "split")
        else:
            n.attrs["split"] = Attr.ints(kept.tolist())

    a.add_fixup(n, resplit)
    return None


def _flatten_like(a: ChannelAnalysis, x: Value | None, out: Value) -> bool:
    """x (N, C, ...) → out (N, C·k) with channel c at features c·k … c·k + k − 1."""
    xs, os_ = a.shape(x), a.shape(out)
    if x is None or not a.tracked(x) or a.axis(x) != 1 or os_ is None or len(os_) != 2 or xs is None:
        return False
    spatial = [d for d in xs[2:] if isinstance(d, int)]
    c = xs[1]
    if len(spatial) != len(xs) - 2 or not isinstance(c, int):
        return False  # a symbolic image size: the feature count is not known
    k = int(np.prod(spatial)) if spatial else 1
    if os_[0] != xs[0] or os_[1] != c * k or not a.track(out, 1):
        return False
    a.tie(np.repeat(a.atoms(x), k), a.atoms(out))
    return True


@channel_rule("Flatten")
def flatten(a: ChannelAnalysis, n: Node) -> None:
    """Flatten at axis 1: channel c becomes features c·HW … (c+1)·HW − 1."""
    if n.attr_int("axis", 1) != 1 or not _flatten_like(a, n.input(0), n.outputs[0]):
        a.block_all(n)


@channel_rule("Reshape")
def reshape(a: ChannelAnalysis, n: Node) -> None:
    """A Reshape that flattens (N, C, ...) to (N, C·k); a constant target's feature count
    becomes -1 so it follows the pruning."""
    x, target = n.input(0), n.input(1)
    if target is not None and target.const is None and _flatten_at_run_time(a, x, target, n.outputs[0]):
        return None
    if target is None or not _private(target) or not _flatten_like(a, x, n.outputs[0]):
        return a.block_all(n)
    if _const(n, 1).size == 2 and _const(n, 1)[1] > 0:

        def reshape_to_minus_one(removed: Removed, n: Node = n) -> None:
            s = _const(n, 1).copy()
            s[1] = -1
            set_const(a.graph, n, 1, s, "shape")

        a.add_fixup(n, reshape_to_minus_one)
    return None


def _flatten_at_run_time(a: ChannelAnalysis, x: Value | None, target: Value, out: Value) -> bool:
    """`x.view(x.size(0), -1)` as exporters write it: the shape is Concat(batch, [-1]), so it
    follows the channels by itself. The analysis knows the output's feature count (the
    graph's type may not); `remove` writes the pruned one into the type."""
    p = target.producer
    tail = p.input(1) if p is not None and p.op == "Concat" and len(p.inputs) == 2 else None
    xs = a.shape(x)
    if tail is None or tail.const is None or tail.const.tolist() != [-1] or xs is None or len(xs) < 2 \
            or out.type is None:
        return False
    features = [d for d in xs[1:] if isinstance(d, int)]
    if len(features) != len(xs) - 1:
        return False
    batch = xs[0]
    a.know_shape(out, (batch, int(np.prod(features))))
    if not _flatten_like(a, x, out):
        return False

    def retype_output(removed: Removed, out: Value = out) -> None:
        retype(out, (batch, a.size(out) - len(removed(out))))

    assert out.producer is not None
    a.add_fixup(out.producer, retype_output)
    return True


def _axes(n: Node) -> np.ndarray | None:
    """The axes of a Squeeze, Unsqueeze or reduction: its input 1 or its attribute."""
    given = n.input(1)
    if given is not None:
        return given.const
    return np.asarray(n.attr_ints("axes")) if "axes" in n.attrs else None


@channel_rule("Squeeze")
def squeeze(a: ChannelAnalysis, n: Node) -> None:
    """Channels follow when the channel axis is not squeezed."""
    _axes_op(a, n, squeeze=True)


@channel_rule("Unsqueeze")
def unsqueeze(a: ChannelAnalysis, n: Node) -> None:
    """Channels follow to their axis's new position."""
    _axes_op(a, n, squeeze=False)


def _axes_op(a: ChannelAnalysis, n: Node, squeeze: bool) -> None:
    x, out = n.input(0), n.outputs[0]
    xs, os_ = a.shape(x), a.shape(out)
    if x is None or not a.tracked(x) or os_ is None or xs is None:
        return a.block_all(n)
    axes_v = _axes(n)
    if axes_v is None:
        return a.block_all(n)
    ax = a.axis(x)
    if squeeze:
        axes = {int(i) % len(xs) for i in np.ravel(axes_v)}
        if ax in axes:
            return a.block_all(n)
        new = ax - sum(i < ax for i in axes)
    else:
        axes = {int(i) % len(os_) for i in np.ravel(axes_v)}
        kept = [i for i in range(len(os_)) if i not in axes]
        new = kept[ax]
    if a.track(out, new):
        a.tie(a.atoms(x), a.atoms(out))
    else:
        a.block_all(n)
    return None


@channel_rule("Transpose")
def transpose(a: ChannelAnalysis, n: Node) -> None:
    """Channels follow their axis to its place in the permutation."""
    x, out = n.input(0), n.outputs[0]
    xs = a.shape(x)
    if x is None or not a.tracked(x) or xs is None:
        return a.block_all(n)
    perm = n.attr_ints("perm", list(reversed(range(len(xs)))))
    if a.track(out, perm.index(a.axis(x))):
        a.tie(a.atoms(x), a.atoms(out))
    else:
        a.block(x)
    return None


@channel_rule("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def reduce(a: ChannelAnalysis, n: Node) -> None:
    """A reduction over other axes keeps the channels (at a new position without keepdims)."""
    x, out = n.input(0), n.outputs[0]
    xs = a.shape(x)
    axes_v = _axes(n)
    if x is None or not a.tracked(x) or axes_v is None or xs is None:
        return a.block_all(n)
    rank = len(xs)
    axes = {int(i) % rank for i in np.ravel(axes_v)}
    ax = a.axis(x)
    if ax in axes:
        return a.block_all(n)
    new = ax if n.attr_int("keepdims", 1) else ax - sum(i < ax for i in axes)
    if a.track(out, new):
        a.tie(a.atoms(x), a.atoms(out))
    else:
        a.block(x)
    return None
