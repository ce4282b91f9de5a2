"""Data-movement ops: shapes, reshapes, concatenation, slicing, gathers, constants.

They do no arithmetic (FLOPs 0) but they are priced: cost models charge the bytes they move.
"""

from __future__ import annotations

import math

import numpy as np

from hwnas.ir.attributes import AttrKind
from hwnas.ir.graph import Node, Value
from hwnas.ir.ops.common import in_type, norm_axis, out_numel
from hwnas.ir.registry import (
    NO_TRAITS,
    Channels,
    OpTraits,
    Work,
    const_value,
    declare_traits,
    infer,
    onnx_infer,
    work,
)
from hwnas.ir.types import Dim, DType, TensorType

MOVEMENT_OPS = (
    "Reshape", "Flatten", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements",
    "GatherND", "Squeeze", "Unsqueeze", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth",
    "Shape", "Size", "Constant", "ConstantOfShape", "ScatterElements", "ScatterND", "Range",
    "OneHot", "NonZero", "TopK", "ArgMax", "ArgMin", "CumSum", "Trilu", "EyeLike", "Compress",
)
# Traits. The channel analysis has rules of its own for the views, Transpose, Concat, Split, Pad.
declare_traits(OpTraits(view=True, kernel="movement"), "Reshape", "Flatten", "Squeeze", "Unsqueeze")
declare_traits(OpTraits(kernel="movement"), "Transpose", "Concat", "Split", "Slice", "Pad", "Gather", "Expand", "Tile")
declare_traits(OpTraits(channels=Channels.SHAPE_ONLY), "Shape", "Size")
declare_traits(
    NO_TRAITS,
    "GatherElements", "GatherND", "DepthToSpace", "SpaceToDepth", "Constant", "ConstantOfShape", "ScatterElements",
    "ScatterND", "Range", "OneHot", "NonZero", "TopK", "ArgMax", "ArgMin", "CumSum", "Trilu", "EyeLike", "Compress",
)


def constant_node_value(node: Node) -> np.ndarray | None:
    """The array a Constant node holds, whichever of its attributes carries it."""
    for key, a in node.attrs.items():
        if a.kind is AttrKind.TENSOR:
            return a.value
        if key == "value_float":
            return np.array(a.value, dtype=np.float32)
        if key == "value_floats":
            return np.array(a.value, dtype=np.float32)
        if key == "value_int":
            return np.array(a.value, dtype=np.int64)
        if key == "value_ints":
            return np.array(a.value, dtype=np.int64)
    return None


@work(*MOVEMENT_OPS)
def _movement_work(node: Node) -> Work:
    # Index arithmetic is not counted: these ops are priced by the bytes they move.
    return Work(flops=out_numel(node) if node.op in ("CumSum", "TopK", "ArgMax", "ArgMin") else 0)


@infer("Constant")
def _constant(node: Node) -> list[TensorType | None]:
    v = constant_node_value(node)
    return [TensorType.of_array(v) if v is not None else None]


@infer("ConstantOfShape")
def _constant_of_shape(node: Node) -> list[TensorType | None]:
    shape = const_value(node.input(0))
    value = node.attrs.get("value")
    dtype = DType.from_numpy(value.value.dtype) if value is not None else DType.FLOAT
    if shape is None:
        return onnx_infer(node)
    return [TensorType(dtype, tuple(int(d) for d in shape))]


@infer("Shape")
def _shape(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    if x.shape is None:
        return [TensorType(DType.INT64, (None,))]
    rank = len(x.shape)

    def clamp(i: int) -> int:  # Shape-15 clamps start and end into [0, rank]
        return max(0, min(rank, i + rank if i < 0 else i))

    start = clamp(node.attr_int("start", 0))
    stop = clamp(node.attr_int("end", rank))
    return [TensorType(DType.INT64, (max(0, stop - start),))]


# -- values of shape computations ------------------------------------------------------
# Exporters compute reshape targets from the input's shape at run time (torch's `unflatten` in
# attention: Shape, Gather, Add, Mod, Slice, Concat). For a tensor of known shape these are known
# before run time; evaluating the small integer chain gives Reshape its target, where onnx's
# per-node inference sees only constants.

SHAPE_VALUE_LIMIT = 64
"""Largest integer tensor (elements) evaluated as a shape value."""


def _ints(node: Node, args: list[np.ndarray | None], i: int) -> list[int] | None:
    a = args[i] if i < len(args) else None
    return None if a is None else [int(v) for v in np.ravel(a)]


def _slice(node: Node, args: list[np.ndarray | None]) -> np.ndarray:
    data, starts, ends = args[0], _ints(node, args, 1), _ints(node, args, 2)
    assert data is not None and starts is not None and ends is not None
    axes = _ints(node, args, 3) or list(range(len(starts)))
    steps = _ints(node, args, 4) or [1] * len(starts)
    index = [slice(None)] * data.ndim
    for a, b, e, st in zip(axes, starts, ends, steps, strict=True):
        if st == 0:
            raise ValueError("slice step 0")
        index[norm_axis(a, data.ndim)] = slice(b, e, st)
    return data[tuple(index)]


def _unsqueeze_value(node: Node, args: list[np.ndarray | None]) -> np.ndarray:
    data = args[0]
    assert data is not None
    axes = _ints(node, args, 1) if len(args) > 1 else node.attr_ints("axes")
    rank = data.ndim + len(axes or [])
    for a in sorted(norm_axis(a, rank) for a in axes or []):
        data = np.expand_dims(data, a)
    return data


def _squeeze_value(node: Node, args: list[np.ndarray | None]) -> np.ndarray:
    data = args[0]
    assert data is not None
    axes = _ints(node, args, 1) if len(args) > 1 else node.attr_ints("axes") or None
    return np.squeeze(data, tuple(norm_axis(a, data.ndim) for a in axes) if axes else None)


def _reshape_value(node: Node, args: list[np.ndarray | None]) -> np.ndarray:
    data, target = args[0], _ints(node, args, 1)
    assert data is not None and target is not None
    allowzero = node.attr_int("allowzero", 0)
    return data.reshape([data.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)])


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))  # integer Div truncates toward zero


SHAPE_FOLDS = {
    "Identity": lambda n, a: a[0],
    "Cast": lambda n, a: a[0],  # to an integer type: `shape_value` only follows integer values
    "Slice": _slice,
    "Concat": lambda n, a: np.concatenate(a, axis=n.attr_int("axis", 0)),
    "Gather": lambda n, a: np.take(a[0], a[1], axis=n.attr_int("axis", 0)),
    "Unsqueeze": _unsqueeze_value,
    "Squeeze": _squeeze_value,
    "Reshape": _reshape_value,
    "Add": lambda n, a: a[0] + a[1],
    "Sub": lambda n, a: a[0] - a[1],
    "Mul": lambda n, a: a[0] * a[1],
    "Div": lambda n, a: _int_div(a[0], a[1]),
    "Mod": lambda n, a: np.mod(a[0], a[1]) if not n.attr_int("fmod", 0) else np.fmod(a[0], a[1]),
}
"""Integer ops evaluated on values known before run time (their results are small)."""


def shape_value(v: Value | None, depth: int = 12) -> np.ndarray | None:
    """The value of a small integer tensor known before run time: a constant, the shape of a tensor
    of known shape, or `SHAPE_FOLDS` ops of those (up to `depth` ops back); None otherwise."""
    c = const_value(v)
    if c is not None or v is None or depth == 0:
        return c
    p = v.producer
    if (p is None or p.domain or p.op not in SHAPE_FOLDS or len(p.outputs) != 1 or v.type is None
            or v.type.dtype not in (DType.INT64, DType.INT32) or not p.inputs):
        return None
    args = [None if x is None else shape_value(x, depth - 1) for x in p.inputs]
    if any(a is None for x, a in zip(p.inputs, args, strict=True) if x is not None):
        return None
    if any(a is not None and (a.dtype.kind not in "iu" or a.size > SHAPE_VALUE_LIMIT) for a in args):
        return None
    try:
        with np.errstate(all="raise"):
            out = np.asarray(SHAPE_FOLDS[p.op](p, args))
    except (ValueError, IndexError, TypeError, ZeroDivisionError, FloatingPointError, AssertionError):
        return None
    return out.astype(v.type.dtype.numpy) if out.size <= SHAPE_VALUE_LIMIT else None


@infer("Reshape")
def _reshape(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    target = shape_value(node.input(1))
    if target is None or x.shape is None:
        return onnx_infer(node)
    allowzero = bool(node.attr("allowzero", 0))
    out: list[Dim] = []
    for i, d in enumerate(int(v) for v in target):
        out.append(x.shape[i] if d == 0 and not allowzero else d)
    if -1 in out:
        known = [d for d in out if d != -1]
        sizes = [d for d in known if isinstance(d, int)]
        total = x.numel()
        if total is None or len(sizes) != len(known):
            out = [None if d == -1 else d for d in out]
        else:
            rest = math.prod(sizes)
            out = [total // rest if d == -1 else d for d in out]
    return [TensorType(x.dtype, tuple(out))]


@infer("Flatten")
def _flatten(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    if x.shape is None:
        return [TensorType(x.dtype, (None, None))]
    rank = len(x.shape)
    axis = node.attr_int("axis", 1)
    if not -rank <= axis <= rank:
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis

    def _p(dims: tuple[Dim, ...]) -> Dim:
        sizes = [d for d in dims if isinstance(d, int)]
        if len(sizes) == len(dims):
            return math.prod(sizes)
        symbolic = [d for d in dims if d != 1]
        return symbolic[0] if len(symbolic) == 1 else None  # (N,1,1) flattens to N

    return [TensorType(x.dtype, (_p(x.shape[:axis]), _p(x.shape[axis:])))]


@infer("Transpose")
def _transpose(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    if x.shape is None:
        return [x]
    perm = node.attr_ints("perm") or list(reversed(range(len(x.shape))))
    return [TensorType(x.dtype, tuple(x.shape[p] for p in perm))]


@infer("Concat")
def _concat(node: Node) -> list[TensorType | None]:
    types = [in_type(node, i) for i in range(len(node.inputs))]
    shapes = [t.shape for t in types]
    known = [s for s in shapes if s is not None]
    if len(known) != len(shapes):
        return [TensorType(types[0].dtype, None)]
    rank = len(known[0])
    if "axis" not in node.attrs:
        raise ValueError("Concat needs an axis")
    axis = norm_axis(node.attr_int("axis", 0), rank)
    out = list(known[0])
    sizes = [s[axis] for s in known]
    ints = [d for d in sizes if isinstance(d, int)]
    out[axis] = sum(ints) if len(ints) == len(sizes) else None
    for k in range(rank):
        if k != axis and not isinstance(out[k], int):
            out[k] = next((s[k] for s in known if isinstance(s[k], int)), out[k])
    return [TensorType(types[0].dtype, tuple(out))]


def _axes(node: Node, from_input: bool) -> list[int] | None:
    """Squeeze's or Unsqueeze's axes: input 1 when `from_input` (None unless it is constant),
    else the `axes` attribute (None when absent)."""
    if from_input:
        axes = const_value(node.input(1))
        return None if axes is None else [int(a) for a in axes]
    return node.attr_ints("axes") if "axes" in node.attrs else None


@infer("Squeeze")
def _squeeze(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    given = node.input(1) is not None  # axes as an input (opset 13+), maybe not constant
    axes = _axes(node, given)
    if x.shape is None or (given and axes is None) or (axes is None and not x.is_static):
        return onnx_infer(node)
    rank = len(x.shape)
    drop = {norm_axis(int(a), rank) for a in axes} if axes is not None else {
        i for i, d in enumerate(x.shape) if d == 1}
    return [TensorType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in drop))]


@infer("Unsqueeze")
def _unsqueeze(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    axes = _axes(node, len(node.inputs) > 1)
    if x.shape is None or axes is None:
        return onnx_infer(node)
    rank = len(x.shape) + len(axes)
    ins = sorted(norm_axis(int(a), rank) for a in axes)
    out: list[Dim] = list(x.shape)
    for a in ins:
        out.insert(a, 1)
    return [TensorType(x.dtype, tuple(out))]


@infer("Gather")
def _gather(node: Node) -> list[TensorType | None]:
    x, idx = in_type(node), in_type(node, 1)
    if x.shape is None or idx.shape is None:
        return [TensorType(x.dtype, None)]
    axis = norm_axis(node.attr_int("axis", 0), len(x.shape))
    return [TensorType(x.dtype, (*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))]
