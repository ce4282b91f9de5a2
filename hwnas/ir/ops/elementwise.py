"""Element-wise ops: activations, arithmetic with broadcasting, comparisons, casts."""

from __future__ import annotations

from hwnas.ir.graph import Node
from hwnas.ir.ops.common import broadcast, in_type, out_numel, same_as_input, with_dtype
from hwnas.ir.registry import NO_TRAITS, Channels, OpTraits, Work, declare_traits, infer, work
from hwnas.ir.types import DType, TensorType

# FLOPs per output element: 1 for cheap ops, more for transcendental ones (a rough
# instruction-count convention that the cost models may refine per target).
UNARY_COST = {
    "Relu": 1, "LeakyRelu": 2, "PRelu": 2, "Neg": 1, "Abs": 1, "Sign": 1, "Floor": 1, "Ceil": 1,
    "Round": 1, "Reciprocal": 1, "Sqrt": 4, "Exp": 8, "Log": 8, "Tanh": 8, "Sigmoid": 4,
    "HardSigmoid": 3, "HardSwish": 4, "Erf": 8, "Gelu": 10, "Elu": 8, "Selu": 8, "Celu": 8,
    "Softplus": 10, "Softsign": 3, "Mish": 20, "ThresholdedRelu": 1, "Clip": 2, "Shrink": 2,
    "Sin": 8, "Cos": 8, "Tan": 8, "Asin": 8, "Acos": 8, "Atan": 8, "Sinh": 8, "Cosh": 8,
    "Asinh": 8, "Acosh": 8, "Atanh": 8, "Not": 1, "IsNaN": 1, "IsInf": 1, "BitwiseNot": 1,
    "Identity": 0, "Dropout": 0, "Swish": 6,
}
BINARY_COST = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Pow": 8, "Mod": 2, "Max": 1, "Min": 1, "Sum": 1,
    "Mean": 1, "And": 1, "Or": 1, "Xor": 1, "BitShift": 1, "BitwiseAnd": 1, "BitwiseOr": 1,
    "BitwiseXor": 1, "Equal": 1, "Less": 1, "Greater": 1, "LessOrEqual": 1, "GreaterOrEqual": 1,
    "Where": 1,
}
COMPARISONS = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
               "IsNaN", "IsInf", "Not"}

# Traits. Cost models run the first group and the arithmetic as element-wise kernels; the
# channel analysis knows the per-channel ones. (The others are element-wise too, but the cost
# models and the pruning were only ever told about these: widening a trait changes prices.)
ACTIVATION = declare_traits(
    OpTraits(elementwise=True, kernel="elementwise", channels=Channels.PER_CHANNEL),
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "Elu", "Selu", "Softplus", "Gelu",
    "Mish", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Erf", "Cast",
)
declare_traits(OpTraits(channels=Channels.PER_CHANNEL), "Softsign", "Floor", "Ceil", "Round", "Sign",
               "ThresholdedRelu", "Celu")
declare_traits(OpTraits(elementwise=True, kernel="elementwise", channels=Channels.PER_CHANNEL, channel_params=(1,)),
               "PRelu")
declare_traits(OpTraits(view=True, kernel="movement", channels=Channels.PER_CHANNEL), "Identity", "Dropout")
ARITHMETIC = declare_traits(
    OpTraits(elementwise=True, kernel="elementwise", channels=Channels.BROADCAST),
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Pow",
)
declare_traits(OpTraits(channels=Channels.BROADCAST), "Mean", "Where")
declare_traits(
    NO_TRAITS,
    "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Swish", "Shrink",
    "Not", "IsNaN", "IsInf", "BitwiseNot", "Mod", "And", "Or", "Xor", "BitShift", "BitwiseAnd", "BitwiseOr",
    "BitwiseXor", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "CastLike",
)


@infer(*(op for op in UNARY_COST if op not in ("Dropout", "IsNaN", "IsInf", "Not")))
def _unary(node: Node) -> list[TensorType | None]:
    return same_as_input(node)


@infer("IsNaN", "IsInf", "Not")
def _unary_bool(node: Node) -> list[TensorType | None]:
    return [with_dtype(in_type(node), DType.BOOL)]


@infer("Dropout")
def _dropout(node: Node) -> list[TensorType | None]:
    t = in_type(node)
    types: list[TensorType | None] = [t, with_dtype(t, DType.BOOL)]  # output, mask
    return types[: len(node.outputs)]


@infer(*(op for op in BINARY_COST if op != "Where"))
def _nary(node: Node) -> list[TensorType | None]:
    types = [in_type(node, i) for i in range(len(node.inputs))]
    dtype = DType.BOOL if node.op in COMPARISONS else types[0].dtype
    return [TensorType(dtype, broadcast(*(t.shape for t in types)))]


@infer("Where")
def _where(node: Node) -> list[TensorType | None]:
    c, x, y = (in_type(node, i) for i in range(3))
    return [TensorType(x.dtype, broadcast(c.shape, x.shape, y.shape))]


@infer("Cast")
def _cast(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    if "to" not in node.attrs:
        raise ValueError("Cast needs a 'to' attribute")
    return [with_dtype(x, DType(node.attr_int("to", 0)))]


@infer("CastLike")
def _cast_like(node: Node) -> list[TensorType | None]:
    return [with_dtype(in_type(node), in_type(node, 1).dtype)]


@work(*UNARY_COST)
def _unary_work(node: Node) -> Work:
    return Work(flops=UNARY_COST[node.op] * out_numel(node))


@work(*BINARY_COST)
def _binary_work(node: Node) -> Work:
    arity = max(1, len([v for v in node.inputs if v is not None]) - 1)
    return Work(flops=BINARY_COST[node.op] * arity * out_numel(node))


@work("Cast", "CastLike")
def _cast_work(node: Node) -> Work:
    return Work(flops=out_numel(node))
