"""Feature vectors of kernels, computed from a `NodeWork`: the same function runs on the
single-kernel models of a calibration and on every node `estimate()` prices, so the predictor
sees identical features at fit and predict time (nn-Meter's per-kernel-type features)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwnas.backends.cost.base import NodeWork
from hwnas.calibrate.fusion import Kernel, integer, integer_edges, memory_bytes, role, static
from hwnas.ir.graph import Node, Value
from hwnas.ir.ops.reduce import REDUCE_COST, reduced_axes

FEATURES_VERSION = 8
"""Bumped when a vector changes: `calibrate` then recomputes a file's features from its kernel
specs (no re-measuring), and until then `read_calibration` refuses the file."""

ACT_CODES = {None: 0, "Relu": 1, "Clip": 2, "Sigmoid": 3, "LeakyRelu": 4, "Tanh": 5, "HardSigmoid": 6,
             "HardSwish": 7}
OP_CODES = {op: i for i, op in enumerate((
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "Relu", "Clip", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh", "Add", "Sub", "Mul", "Div", "Sum",
    "BatchNormalization", "Concat", "Transpose", "Softmax", "LRN", "Gemm", "MatMul", "PRelu",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2",
))}
GROUPS = ("conv", "depthwise", "gemm", "pool", "elementwise", "movement", "other")
INT8_GROUPS = {"conv": "conv_int8", "depthwise": "depthwise_int8", "gemm": "gemm_int8",
               "elementwise": "elementwise_int8"}
"""The group of an 8-bit integer kernel (`fusion.integer`), by its kind: QLinearConv, QGemm or
QLinearMatMul, QLinearAdd."""
DYNAMIC_GROUPS = {"ConvInteger": "conv_dynamic", "MatMulInteger": "gemm_dynamic"}
"""onnxruntime's dynamically quantized convs and matrix products (`quantize_dynamic`), which run as
kernels of their own kind, slower than QLinearConv or QGemm of the same size."""
RUNTIME_INTEGER_OPS = (*DYNAMIC_GROUPS, "DynamicQuantizeLSTM")
"""onnxruntime's own integer kernels (dynamic quantization), priced as calibrated whatever their
inputs' precision."""
RECURRENT = {"LSTM": 0, "GRU": 1, "RNN": 2, "DynamicQuantizeLSTM": 3}
"""Recurrent layers by code; DynamicQuantizeLSTM is onnxruntime's (com.microsoft) 8-bit LSTM."""


@dataclass(frozen=True)
class Features:
    """A kernel's feature vector for the latency predictors, with the group that prices it."""

    group: str
    """Which predictor prices it: the NodeWork kind (conv, depthwise, gemm, pool, ...), the
    integer kernel's (conv_int8, ...: `INT8_GROUPS`), onnxruntime's dynamic integer kernel's
    (`DYNAMIC_GROUPS`), or "recurrent" (LSTM, GRU, DynamicQuantizeLSTM)."""
    op: str
    values: tuple[float, ...]
    scale_s: float
    """A rough analytical latency; predictors learn log(latency / scale_s), which extrapolates
    to larger kernels than were measured where plain log-latency forests cannot."""
    reorders: tuple[tuple[bool, tuple[int, int, int]], ...] = ()
    """Layout conversions onnxruntime adds for this kernel: (to NCHWc, (C, H, W))."""
    edges: tuple[tuple[int, int, int], ...] = ()
    """Where an integer kernel meets float tensors, the edge nodes charged to it
    (`fusion.integer_edges`)."""


def featurize(work: NodeWork) -> Features | None:
    """The kernel's features, or None when onnxruntime runs the node inside another kernel."""
    k = role(work.node)
    if k is None:
        return None
    base: str = work.kind if work.kind in GROUPS else "other"
    if work.node.op in RECURRENT and work.node.domain in ("", "com.microsoft"):
        group, base = "recurrent", "recurrent"
    elif work.node.op in DYNAMIC_GROUPS and not work.node.domain:
        group = DYNAMIC_GROUPS[work.node.op]
    elif integer(work.node):
        group = INT8_GROUPS.get(base, "other")
    else:
        group = base
    fns = {"conv": _conv, "depthwise": _conv, "gemm": _gemm, "pool": _pool, "recurrent": _recurrent}
    fn = fns.get(base, _tensor_op)
    values = fn(work, k)
    reorders = tuple((r.to_nchwc, r.shape) for r in k.reorders)
    edges = integer_edges(work.node) if group in INT8_GROUPS.values() else ()
    return Features(group, work.node.op, tuple(float(v) for v in values), _scale(work), reorders, edges)


def edge_features(op: int, elements: int, last: int) -> tuple[tuple[float, ...], float]:
    """Features and scale of a Quantize/Dequantize/Transpose node (`fusion.EDGE_OPS[op]`) over
    `elements` whose last dimension is `last`."""
    values = (op, elements, _log(elements), last, _log(last), last % 16 == 0, elements // max(last, 1))
    return tuple(float(v) for v in values), elements * 5 / 3.0e10 + 2.0e-7


def reorder_features(to_nchwc: bool, shape: tuple[int, int, int]) -> tuple[tuple[float, ...], float]:
    """Features and scale of a layout conversion (ReorderInput/ReorderOutput) of a (C, H, W) tensor."""
    c, h, w = shape
    n = c * h * w
    values = (float(to_nchwc), c, h, w, h * w, _log(n), c % 16 == 0, -(-c // 16) * 16, c % 8 == 0)
    return tuple(float(v) for v in values), n * 8 / 3.0e10 + 2.0e-7


def _scale(w: NodeWork) -> float:
    # Roughly this machine's fp32 rates; only a normalizer, so exactness does not matter.
    return max(w.ops / 1.0e11, w.bytes / 3.0e10) + 1.0e-6


def _shape4(v: Value | None) -> tuple[int, int, int, int]:
    """(N, C, H, W) with missing trailing dims as 1 and unknown dims as 0."""
    shape = v.shape if v is not None and v.shape is not None else ()
    dims = [d if isinstance(d, int) else 0 for d in shape][:4]
    n, c, h, w = dims + [1] * (4 - len(dims))
    return n, c, h, w


def _ints(node: Node, name: str, default: list[int]) -> list[int]:
    value = node.attr(name)
    return [int(x) for x in value] if isinstance(value, list | tuple) and value else default


def _log(x: float) -> float:
    return math.log(max(x, 1.0))


def _dynamic(node: Node) -> list[Value]:
    return [v for v in node.inputs if v is not None and not static(v)]


def _conv(w: NodeWork, k: Kernel) -> list[float]:
    n = w.node
    _, cin, hin, win = _shape4(n.input(0))
    _, cout, hout, wout = _shape4(n.outputs[0])
    kh, kw = (_ints(n, "kernel_shape", [0, 0]) + [1])[:2]
    sh = _ints(n, "strides", [1])[0]
    pads = sum(_ints(n, "pads", [0]))
    group = n.attr_int("group", 1)
    # onnxruntime's NCHWc kernels pad channels to blocks of 16: the work they really do.
    cin16, cout16 = -(-cin // 16) * 16, -(-cout // 16) * 16
    padded = w.macs * (cout16 / max(cout, 1)) * (1 if group == cin else cin16 / max(cin, 1))
    x = n.input(0)
    rank = len(x.shape) if x is not None and x.shape is not None else 4
    sw = (_ints(n, "strides", [1]) * 2)[1]
    # onnxruntime runs 2-D convs in its NCHWc layout and 1-D ones (rank 3) through im2col.
    return [cin, hin, win, cout, hout, wout, kh, kw, sh, group, pads, _log(w.macs), _log(w.act_bytes_read),
            _log(w.act_bytes_written), _log(w.weight_bytes), ACT_CODES.get(k.act, 8), int(k.sum_fused),
            cin % 16 == 0, cout % 16 == 0, cin % 8 == 0, cout % 8 == 0, cin < 8, cin // group, cin16, cout16,
            _log(padded), hout * wout, _log(_others(w)), cin % 4 == 0, cout % 4 == 0, rank, sw, kh * kw]


def _gemm(w: NodeWork, k: Kernel) -> list[float]:
    n = w.node
    b = n.input(1)
    wshape = b.type.shape if b is not None and b.type is not None and b.type.shape else (0, 0)
    trans_b = n.attr_int("transB", 0) if n.op == "Gemm" else 0
    kdim, ndim = (wshape[-1], wshape[-2]) if trans_b else (wshape[-2], wshape[-1])
    kdim = kdim if isinstance(kdim, int) else 0
    ndim = ndim if isinstance(ndim, int) else 0
    out = n.outputs[0].type.numel() if n.outputs[0].type is not None else 0
    m = (out or 0) // max(ndim, 1)
    return [m, kdim, ndim, _log(w.macs), _log(w.weight_bytes), _log(w.act_bytes_read), _log(w.act_bytes_written),
            ACT_CODES.get(k.act, 8), n.op == "MatMul", len(n.inputs) > 2 and n.input(2) is not None, _log(_others(w))]


def _others(w: NodeWork) -> float:
    """Bytes the rest of the model streams through between two runs of this kernel."""
    return max(memory_bytes(w.node) - w.weight_bytes - w.act_bytes_read, 0)


def _pool(w: NodeWork, k: Kernel) -> list[float]:
    n = w.node
    _, c, hin, win = _shape4(n.input(0))
    _, _, hout, wout = _shape4(n.outputs[0])
    kh = _ints(n, "kernel_shape", [hin])[0]
    sh = _ints(n, "strides", [1])[0]
    pads = sum(_ints(n, "pads", [0]))
    return [OP_CODES.get(n.op, -1), c, hin, win, hout, wout, kh, sh, pads, n.attr_int("count_include_pad", 0),
            _log(w.act_bytes_read), _log(w.act_bytes_written), c % 16 == 0, n.attr_int("ceil_mode", 0)]


def _tensor_op(w: NodeWork, k: Kernel) -> list[float]:
    """Element-wise, data movement and the rest: mostly a function of bytes and the op."""
    n = w.node
    dyn = _dynamic(n)
    out = n.outputs[0].type.numel() if n.outputs and n.outputs[0].type is not None else 0
    out = out or 0
    sizes = [(v.type.numel() or 0) if v.type is not None else 0 for v in dyn]
    _, c, h, wd = _shape4(n.outputs[0])
    rank = n.outputs[0].type.rank if n.outputs and n.outputs[0].type is not None else 0
    reduced, inner = _reduction(n)
    return [OP_CODES.get(n.op, -1), _log(out), len(dyn), any(s < out for s in sizes), len(dyn) < len(n.inputs),
            c, h * wd, c % 16 == 0, _log(w.act_bytes_read), _log(w.act_bytes_written), _log(w.flops), rank or 0,
            ACT_CODES.get(k.act, 8), _log(reduced), _log(inner)]


def _reduction(n: Node) -> tuple[int, int]:
    """A reduction's elements folded into each output and the stride between them (the product
    of the dims after the last reduced axis: 1 when it reduces the innermost axis, which
    onnxruntime reads contiguously); (0, 0) for other ops or unknown axes."""
    if n.op not in REDUCE_COST or n.domain:
        return 0, 0
    axes, x = reduced_axes(n), n.input(0)
    dims = [d for d in x.shape if isinstance(d, int)] if x is not None and x.shape is not None else []
    if not axes or x is None or x.shape is None or len(dims) < len(x.shape):
        return 0, 0
    return math.prod(dims[a] for a in axes), math.prod(dims[max(axes) + 1:])


def _recurrent(w: NodeWork, k: Kernel) -> list[float]:
    """An LSTM, GRU or RNN layer: a sequential loop of small matrix-vector products."""
    n = w.node
    seq, batch, inputs = _shape4(n.input(0))[:3]
    if n.attr_int("layout", 0):
        seq, batch = batch, seq
    r = n.input(2)
    rshape = r.type.shape if r is not None and r.type is not None and r.type.shape else (0, 0, 0)
    directions = rshape[0] if isinstance(rshape[0], int) else 0
    r_hidden = rshape[1] if n.op == "DynamicQuantizeLSTM" else rshape[2]  # its R is [directions, hidden, 4·hidden]
    hidden = n.attr_int("hidden_size", 0) or (r_hidden if isinstance(r_hidden, int) else 0)
    return [RECURRENT[n.op], seq, batch, inputs, hidden, directions, _log(w.macs), _log(w.weight_bytes),
            _log(w.act_bytes_read), _log(seq * batch * directions), _log(hidden * (inputs + hidden)), hidden % 16 == 0,
            inputs % 16 == 0, _log(_others(w))]
