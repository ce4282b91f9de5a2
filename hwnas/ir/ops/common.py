"""Helpers shared by the registry entries."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hwnas.ir.graph import Node, Value
from hwnas.ir.types import Dim, DType, TensorType


def in_type(node: Node, i: int = 0) -> TensorType:
    """The type of input `i`; ValueError when it is absent or untyped (inference gives up)."""
    v = node.input(i)
    if v is None or v.type is None:
        raise ValueError(f"input {i} has no known type")
    return v.type


def out_numel(node: Node, i: int = 0) -> int:
    """Elements of output `i`, 0 when unknown."""
    v = node.outputs[i] if i < len(node.outputs) else None
    return numel(v)


def numel(v: Value | None) -> int:
    """Elements of the value, 0 when unknown."""
    if v is None or v.type is None:
        return 0
    return v.type.numel() or 0


def same_as_input(node: Node) -> list[TensorType | None]:
    """Inference of ops whose output has their first input's type."""
    return [in_type(node, 0)]


def with_dtype(t: TensorType, dtype: DType) -> TensorType:
    """`t` with another dtype."""
    return TensorType(dtype, t.shape)


def broadcast(*shapes: tuple[Dim, ...] | None) -> tuple[Dim, ...] | None:
    """Numpy-style broadcast of shapes; unknown dims stay unknown."""
    given = [s for s in shapes if s is not None]
    if len(given) != len(shapes):
        return None
    if all(s == given[0] for s in given):  # the common case (a residual Add): each dim is its own broadcast
        return tuple(given[0])
    rank = max(len(s) for s in given)
    out: list[Dim] = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in given if len(s) - rank + k >= 0]
        known = {d for d in dims if isinstance(d, int) and d != 1}
        if len(known) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        if known:
            out.append(known.pop())
        elif all(d == 1 for d in dims):
            out.append(1)
        else:
            syms = {d for d in dims if d != 1}
            out.append(syms.pop() if len(syms) == 1 else None)
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    """A possibly negative axis as a non-negative one; ValueError when out of range."""
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def prod(dims: Sequence[Dim]) -> int:
    """The product of the dims, unknown ones counting 0."""
    return math.prod(d if isinstance(d, int) else 0 for d in dims)
