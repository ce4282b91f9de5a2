"""Reductions over axes (ReduceMean, ReduceSum, ...), given as attribute or as input."""

from __future__ import annotations

from hwnas.ir.graph import Node
from hwnas.ir.ops.common import in_type, norm_axis, numel
from hwnas.ir.registry import NO_TRAITS, Work, const_value, declare_traits, infer, onnx_infer, work
from hwnas.ir.types import TensorType

REDUCE_COST = {
    "ReduceMean": 1, "ReduceSum": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1,
    "ReduceL1": 2, "ReduceL2": 2, "ReduceSumSquare": 2, "ReduceLogSum": 2, "ReduceLogSumExp": 9,
}
# Nothing generic: the channel analysis has rules of its own for the reductions it follows.
declare_traits(NO_TRAITS, *REDUCE_COST)


def reduced_axes(node: Node) -> set[int] | None:
    """The axes a reduction node reduces (normalized, for its input's rank); None when they are
    not known (a computed `axes` input, an input of unknown rank). With `noop_with_empty_axes` and
    empty axes, the empty set (the node passes its input through)."""
    x = node.input(0)
    if x is None or x.type is None or x.type.shape is None:
        return None
    axes: list[int] | None = None
    if node.attrs.get("axes") is not None:
        axes = node.attr_ints("axes")
    elif node.input(1) is not None:
        given = const_value(node.input(1))
        if given is None:
            return None
        axes = [int(a) for a in given]
    rank = len(x.type.shape)
    if axes is None or len(axes) == 0:
        return set() if node.attr("noop_with_empty_axes", 0) and axes is not None else set(range(rank))
    return {norm_axis(a, rank) for a in axes}


@infer(*REDUCE_COST)
def _reduce(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    red = reduced_axes(node)
    if red is None:
        return onnx_infer(node)
    if not red:
        return [x]
    if node.attr("keepdims", 1):
        return [TensorType(x.dtype, tuple(1 if i in red else d for i, d in enumerate(x.shape)))]
    return [TensorType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in red))]


@work(*REDUCE_COST)
def _reduce_work(node: Node) -> Work:
    return Work(flops=REDUCE_COST[node.op] * numel(node.input(0)))
