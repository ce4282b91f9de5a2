"""Neural-network ops: convolutions, pooling, dense products, normalizations, softmax."""

from __future__ import annotations

import math

from hwnas.ir.graph import Node
from hwnas.ir.ops.common import broadcast, in_type, numel, out_numel, prod
from hwnas.ir.registry import NO_TRAITS, Channels, KernelKind, OpTraits, Pool, Work, declare_traits, infer, work
from hwnas.ir.types import Dim, DType, TensorType


def _spatial_out(
    node: Node, spatial: tuple[Dim, ...], kernel: list[int], ceil_mode: bool = False
) -> list[Dim]:
    n = len(spatial)
    strides = node.attr_ints("strides") or [1] * n
    dil = node.attr_ints("dilations") or [1] * n
    pads = node.attr_ints("pads") or [0] * (2 * n)
    auto_pad = node.attr_str("auto_pad", "NOTSET")
    out: list[Dim] = []
    for i, size in enumerate(spatial):
        if not isinstance(size, int):
            out.append(None)
            continue
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-size // strides[i]))
            continue
        eff_k = dil[i] * (kernel[i] - 1) + 1
        total = size + (0 if auto_pad == "VALID" else pads[i] + pads[i + n]) - eff_k
        o = (math.ceil if ceil_mode else math.floor)(total / strides[i]) + 1
        # A last window that starts inside the right padding is dropped (ONNX, PyTorch).
        if ceil_mode and (o - 1) * strides[i] >= size + (0 if auto_pad == "VALID" else pads[i]):
            o -= 1
        out.append(o)
    return out


def _kernel(node: Node, w: TensorType | None = None) -> list[int]:
    k = node.attr_ints("kernel_shape")
    if k:
        return k
    if w is not None and w.shape is not None:
        return [_known(d) for d in w.shape[2:]]
    raise ValueError("kernel shape unknown")


def _known(d: Dim) -> int:
    if not isinstance(d, int):
        raise ValueError(f"dimension {d!r} is not known")
    return d


def _same_dim(a: Dim, b: Dim, what_a: str, what_b: str) -> None:
    """Operands that must agree on a dimension (known on both sides) do."""
    if isinstance(a, int) and isinstance(b, int) and a != b:
        raise ValueError(f"{what_a} {a} != {what_b} {b}")


def _conv_kernel(node: Node) -> KernelKind:
    """A convolution with one group per output channel is depthwise."""
    group = node.attr_int("group", 1)
    out = node.outputs[0].shape if node.outputs else None
    channels = out[1] if out is not None and len(out) > 1 else None
    return "depthwise" if group > 1 and group == channels else "conv"


declare_traits(OpTraits(weight_inputs=(1,), kernel=_conv_kernel), "Conv", "ConvInteger")
declare_traits(OpTraits(weight_inputs=(3,), kernel=_conv_kernel), "QLinearConv")
declare_traits(OpTraits(weight_inputs=(1,), kernel="conv"), "ConvTranspose")
declare_traits(OpTraits(weight_inputs=(1,), kernel="gemm"), "Gemm", "MatMul", "MatMulInteger")
declare_traits(OpTraits(weight_inputs=(3,), kernel="gemm"), "QLinearMatMul")
declare_traits(OpTraits(pool=Pool("max"), kernel="pool", channels=Channels.PER_CHANNEL), "MaxPool")
declare_traits(OpTraits(pool=Pool("average"), kernel="pool", channels=Channels.PER_CHANNEL), "AveragePool")
declare_traits(OpTraits(pool=Pool("lp"), kernel="pool", channels=Channels.PER_CHANNEL), "LpPool")
declare_traits(OpTraits(pool=Pool("max", whole=True), kernel="pool", channels=Channels.PER_CHANNEL), "GlobalMaxPool")
declare_traits(OpTraits(pool=Pool("average", whole=True), kernel="pool", channels=Channels.PER_CHANNEL),
               "GlobalAveragePool")
declare_traits(OpTraits(pool=Pool("lp", whole=True), kernel="pool"), "GlobalLpPool")
declare_traits(OpTraits(elementwise=True, kernel="elementwise", channels=Channels.PER_CHANNEL,
                        channel_params=(1, 2, 3, 4)), "BatchNormalization")
declare_traits(OpTraits(channels=Channels.PER_CHANNEL, channel_params=(1, 2)), "InstanceNormalization")
# Resize and Upsample gather (and for linear and cubic modes blend) a few input elements per output
# element: kernels that move data. They keep channels when their scales do: the channel analysis
# checks that itself.
declare_traits(OpTraits(kernel="movement"), "Upsample", "Resize")
declare_traits(
    NO_TRAITS,
    "LayerNormalization", "GroupNormalization", "LRN", "Softmax", "LogSoftmax", "Hardmax", "LpNormalization",
    "MeanVarianceNormalization", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
)


@infer("Conv")
def _conv(node: Node) -> list[TensorType | None]:
    x, w = in_type(node, 0), in_type(node, 1)
    if x.shape is None or w.shape is None:
        return [TensorType(x.dtype, None)]
    _same_dim(x.shape[1], w.shape[1] * node.attr_int("group", 1) if isinstance(w.shape[1], int) else None,
              "input channels", "weight channels x group")
    spatial = _spatial_out(node, x.shape[2:], _kernel(node, w))
    return [TensorType(x.dtype, (x.shape[0], w.shape[0], *spatial))]


@work("Conv", "ConvInteger", "QLinearConv")
def _conv_work(node: Node) -> Work:
    w_index = 3 if node.op == "QLinearConv" else 1
    w = in_type(node, w_index)
    per_out = prod(w.shape[1:]) if w.shape is not None else 0
    macs = out_numel(node) * per_out
    has_bias = node.input(8 if node.op == "QLinearConv" else 2) is not None
    return Work(macs=macs, flops=2 * macs + (out_numel(node) if has_bias else 0))


@work("ConvTranspose")
def _conv_transpose_work(node: Node) -> Work:
    w = in_type(node, 1)  # (Cin, Cout/group, k...)
    per_in = prod(w.shape[1:]) if w.shape is not None else 0
    macs = numel(node.input(0)) * per_in
    return Work(macs=macs, flops=2 * macs)


@infer("MaxPool", "AveragePool", "LpPool")
def _pool(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    spatial = _spatial_out(node, x.shape[2:], _kernel(node), bool(node.attr("ceil_mode", 0)))
    t = TensorType(x.dtype, (*x.shape[:2], *spatial))
    types: list[TensorType | None] = [t, TensorType(DType.INT64, t.shape)]  # values, indices
    return types[: len(node.outputs)]


@work("MaxPool", "AveragePool", "LpPool")
def _pool_work(node: Node) -> Work:
    return Work(flops=out_numel(node) * prod(_kernel(node)))


@infer("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    if x.shape is None:
        return [x]
    return [TensorType(x.dtype, (*x.shape[:2], *([1] * (len(x.shape) - 2))))]


@work("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool_work(node: Node) -> Work:
    return Work(flops=numel(node.input(0)))


@infer("Gemm")
def _gemm(node: Node) -> list[TensorType | None]:
    a, b = in_type(node, 0), in_type(node, 1)
    if a.shape is None or b.shape is None:
        return [TensorType(a.dtype, None)]
    m = a.shape[1] if node.attr("transA", 0) else a.shape[0]
    n = b.shape[0] if node.attr("transB", 0) else b.shape[1]
    _same_dim(a.shape[0] if node.attr("transA", 0) else a.shape[1],
              b.shape[1] if node.attr("transB", 0) else b.shape[0], "A's inner dim", "B's inner dim")
    return [TensorType(a.dtype, (m, n))]


@work("Gemm")
def _gemm_work(node: Node) -> Work:
    a = in_type(node, 0)
    k = (a.shape[0] if node.attr("transA", 0) else a.shape[1]) if a.shape else 0
    macs = out_numel(node) * (k if isinstance(k, int) else 0)
    bias = out_numel(node) if node.input(2) is not None else 0
    return Work(macs=macs, flops=2 * macs + bias)


@infer("MatMul", "MatMulInteger")
def _matmul(node: Node) -> list[TensorType | None]:
    a, b = in_type(node, 0), in_type(node, 1)
    dtype = DType.INT32 if node.op == "MatMulInteger" else a.dtype
    if a.shape is None or b.shape is None:
        return [TensorType(dtype, None)]
    sa, sb = list(a.shape), list(b.shape)
    if len(sa) == 1 and len(sb) == 1:
        return [TensorType(dtype, ())]
    squeeze_a, squeeze_b = len(sa) == 1, len(sb) == 1
    if squeeze_a:
        sa = [1, *sa]
    if squeeze_b:
        sb = [*sb, 1]
    _same_dim(sa[-1], sb[-2], "A's inner dim", "B's inner dim")
    batch = broadcast(tuple(sa[:-2]), tuple(sb[:-2])) or ()
    shape = [*batch] + ([] if squeeze_a else [sa[-2]]) + ([] if squeeze_b else [sb[-1]])
    return [TensorType(dtype, tuple(shape))]


@work("MatMul", "MatMulInteger", "QLinearMatMul")
def _matmul_work(node: Node) -> Work:
    a = in_type(node, 0)
    k = a.shape[-1] if a.shape else 0
    macs = out_numel(node) * (k if isinstance(k, int) else 0)
    return Work(macs=macs, flops=2 * macs)


def _einsum_kernel(node: Node) -> KernelKind:
    """A contraction of two or more operands runs as a (batched) matrix product; one operand's
    einsum (a transpose, a diagonal, a sum) moves data."""
    return "gemm" if len(node.inputs) > 1 else "movement"


declare_traits(OpTraits(kernel=_einsum_kernel), "Einsum")


@work("Einsum")
def _einsum_work(node: Node) -> Work:
    """Evaluated as written: each combination of the equation's letters is one multiply-add per
    further operand (a product of two operands is out x contracted MACs, as MatMul's); one
    operand's einsum only adds what it sums. Ellipses are not counted (ValueError: unpriced)."""
    lhs = node.attr_str("equation", "").replace(" ", "").split("->")[0]
    terms = lhs.split(",")
    if "." in lhs or len(terms) != len(node.inputs):
        raise ValueError(f"equation {lhs!r} is not counted")
    sizes: dict[str, int] = {}
    for term, v in zip(terms, node.inputs, strict=True):
        shape = v.type.static_shape if v is not None and v.type is not None else None
        if shape is None or len(shape) != len(term):
            raise ValueError("operand sizes unknown")
        sizes.update(zip(term, shape, strict=True))
    combos = prod(list(sizes.values()))
    if len(terms) == 1:
        return Work(macs=0, flops=combos)
    macs = combos * (len(terms) - 1)
    return Work(macs=macs, flops=2 * macs)


@infer("BatchNormalization")
def _batchnorm(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    c = in_type(node, 1)
    return [x, *[c] * (len(node.outputs) - 1)]


@infer("InstanceNormalization", "LayerNormalization", "GroupNormalization", "LRN",
       "Softmax", "LogSoftmax", "Hardmax", "LpNormalization", "MeanVarianceNormalization")
def _normalize(node: Node) -> list[TensorType | None]:
    x = in_type(node)
    if node.op != "LayerNormalization" or len(node.outputs) == 1:
        return [x]
    # LayerNormalization's optional Mean and InvStdDev keep the normalized axes as 1.
    axis = node.attr_int("axis", -1)
    stat = None
    if x.shape is not None:
        axis = axis % len(x.shape)
        stat = (*x.shape[:axis], *([1] * (len(x.shape) - axis)))
    stash = DType(node.attr_int("stash_type", 1))
    return [x, *[TensorType(stash, stat)] * (len(node.outputs) - 1)]


NORM_COST = {
    "BatchNormalization": 2, "InstanceNormalization": 8, "LayerNormalization": 8,
    "GroupNormalization": 8, "Softmax": 5, "LogSoftmax": 6, "Hardmax": 2,
    "LpNormalization": 4, "MeanVarianceNormalization": 8,
}


@work(*NORM_COST)
def _norm_work(node: Node) -> Work:
    return Work(flops=NORM_COST[node.op] * out_numel(node))


@work("LRN")
def _lrn_work(node: Node) -> Work:
    return Work(flops=(node.attr_int("size", 1) + 3) * out_numel(node))


@infer("Upsample", "Resize")
def _resize(node: Node) -> list[TensorType | None]:
    from hwnas.ir.registry import const_value, onnx_infer

    x = in_type(node)
    sizes = const_value(node.input(3)) if node.op == "Resize" else None
    if x.shape is not None and sizes is not None and sizes.size:
        axes = node.attr("axes")
        if axes is None:
            return [TensorType(x.dtype, tuple(int(s) for s in sizes))]
    return onnx_infer(node)


@work("Upsample", "Resize")
def _resize_work(node: Node) -> Work:
    # Per output element: nearest reads one input element (1 for the index); linear blends 2 and
    # cubic 4 per resized axis (a multiply and an add each), so bilinear is 8, bicubic 32.
    mode = node.attr_str("mode", "nearest")
    if mode == "nearest":
        return Work(flops=out_numel(node))
    x, y = node.input(0), node.outputs[0] if node.outputs else None
    xs = x.type.shape if x is not None and x.type is not None else None
    ys = y.type.shape if y is not None and y.type is not None else None
    resized = (sum(a != b for a, b in zip(xs, ys, strict=True)) if xs is not None and ys is not None
               and len(xs) == len(ys) else 2)
    taps = {"linear": 2, "bilinear": 2, "cubic": 4, "bicubic": 4}.get(mode, 2) ** max(resized, 1)
    return Work(flops=2 * taps * out_numel(node))


@work("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
def _quant_work(node: Node) -> Work:
    return Work(flops=3 * numel(node.input(0)))

