"""Single-kernel ONNX models to calibrate on, sampled over the configurations CNNs use.

A kernel is a JSON-able spec (`{"family": "conv", "cin": 32, ...}`) that `build` turns into an
ONNX model, and `prepare` into the IR graph `estimate` would see plus the model to time.
Integer kernels (families ending in `_int8`) are the float kernel put through hwnas's own
`quantize` pass (8-bit weights and data, its calibration) and QDQ emitter, so onnxruntime runs
them as it runs what hwnas compiles (QLinearConv, QGemm, QLinearMatMul, QLinearAdd); the
Quantize/Dequantize nodes and NHWC transposes at the model's edges, which inside an integer
network happen only where it enters and leaves integers, are not timed. Recurrent kernels
(LSTM, GRU, and onnxruntime's DynamicQuantizeLSTM, what its `quantize_dynamic` makes of an LSTM)
are one layer over a sequence. Element-wise kernels include PRelu with a per-channel or a
scalar slope, which onnxruntime runs through its generic broadcasting loop (several times the
time of a Relu or LeakyRelu on the same tensor).

Spec i of a calibration depends only on (seed, i), so a longer or interrupted run continues
with the same kernels. Helper nodes that only set up the context (the NCHWc residual
of a fused Conv+Add; the read of other memory that evicts a layer's weights from the caches, as
the rest of a network does between two of its runs) are named `aux_*` and excluded when timing.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwnas.ir.graph import Graph

Spec = dict[str, Any]

FAMILIES = ("conv", "depthwise", "gemm", "pool", "elementwise", "movement", "other", "conv_int8", "depthwise_int8",
            "gemm_int8", "add_int8", "recurrent")
# Float kernels keep their shares of earlier calibrations (0.38, 0.20, ... scaled by 0.76); integer
# kernels get 0.20, recurrent layers 0.04.
WEIGHTS = (0.2888, 0.152, 0.038, 0.0684, 0.1444, 0.0456, 0.0228, 0.09, 0.04, 0.03, 0.04, 0.04)
INT8_FAMILIES = ("conv_int8", "depthwise_int8", "gemm_int8", "add_int8")
"""Families measured as hwnas's int8 QDQ emission; each but add_int8 is its float family quantized."""
RECURRENT_OPS = ("LSTM", "GRU")
DYNAMIC_P = 0.3
"""Share of conv_int8 and gemm_int8 kernels built as onnxruntime's dynamic quantization writes
them (`quantize_dynamic`: DynamicQuantizeLinear, then ConvInteger or MatMulInteger on uint8
weights, then Cast and a rescaling Mul), which its CPU provider runs unfused (im2col and an
integer GEMM), not as QLinearConv or QGemm."""
DYNAMIC_OPS = {"conv": "ConvInteger", "gemm": "MatMulInteger"}
QUANTIZED_LSTM_P = 0.35
"""Share of LSTM kernels built as onnxruntime's DynamicQuantizeLSTM (8-bit W and R)."""
PRELU_P = 0.08
"""Share of element-wise kernels that are a PRelu (drawn after the rest of the spec, so the other
kernels of a seed keep their sizes)."""
SHAPED_P = 0.15
"""Share of float conv and depthwise kernels that are not square (`_shaped`): 1-D convs over a
sequence, (k, 1) kernels over a one-column image, rectangular images, (1, k) or (k, 1) kernels
and (2, 1) strides, as audio, byte-sequence and text-line models use them."""
LARGE_GEMM_P = 0.2
"""Share of float gemm kernels whose weights outgrow the caches (`_large_gemm`: 24-512 MB, the
classifier layers of AlexNet, ZFNet and VGG): beyond the last-level cache a batch-1 GEMM streams
its weights from DRAM at about half the rate it reads them from L3 (15 against 28 GB/s on the
Xeon), which no smaller kernel shows. Drawn after the rest, so other kernels keep theirs."""
GEMM_ROWS_P = 0.35
"""Share of the other float and integer gemm kernels with 2-512 rows (`_rows`), a sequence's
steps or a batch, as OCR heads, recurrent models' projections and attention run them: with rows
a GEMM is no longer bound by streaming its weights once (ddddocr's 32 x 1024 x 8210
MatMulInteger takes half what a one-row kernel's rate predicts)."""
REDUCE_P = 0.5
"""Share of the `other` family's kernels that are a reduction (`_reduce`): layer norms written
out as ReduceMean or ReduceSum, pooling over a sequence, a max over classes."""
REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2")
MAX_RECURRENT_MACS = 1.0e8
# Feature-map sizes of CNNs at their usual inputs (224, 192, 160, 128, 96 and CIFAR's 32, halved
# stage by stage; AlexNet's 55/27/13), as nn-Meter samples around real models' configurations.
RESOLUTIONS = (2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14, 16, 20, 24, 27, 28, 32, 40, 48, 55, 56, 64, 80, 96, 112, 128,
               160, 192, 224)
TYPICAL_CHANNELS = (8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 120, 128, 144, 160, 192, 224, 240, 256, 288,
                    320, 384, 448, 480, 512, 576, 640, 672, 768, 960, 1024, 1152, 1280, 1536, 2048)
CONV_ACTS = (None, "Relu", "Clip", "Sigmoid", "HardSwish", "LeakyRelu")
CONV_ACT_P = (0.34, 0.34, 0.22, 0.03, 0.04, 0.03)
UNARY = ("Relu", "Clip", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh")
WEIGHTED = ("conv", "depthwise", "gemm")
MAX_FLUSH_MB = 96.0
LARGE_CONST = 2**24
"""Weights above this many elements (only `_large_gemm`'s) are drawn in float32 directly."""
MAX_MACS = 2.0e9
MAX_ELEMENTS = 3 * 2**20
OPSET = 17


def sample_spec(seed: int, index: int) -> Spec:
    """Kernel `index` of the calibration drawn with `seed`."""
    rng = np.random.default_rng([seed, index])
    family = FAMILIES[int(rng.choice(len(FAMILIES), p=WEIGHTS))]
    spec = {"family": family, **_SAMPLERS[family](rng)}
    if family.removesuffix("_int8") in WEIGHTED:
        # Inside a network, the rest of the model runs between two runs of a layer and may evict
        # its weights from the caches (32 MiB of L3 here): time some kernels after streaming
        # through that much other memory, as `flush_mb`.
        spec["flush_mb"] = 0.0 if rng.random() < 0.35 else round(math.exp(rng.uniform(math.log(0.5),
                                                                                          math.log(MAX_FLUSH_MB))), 2)
    if family in ("conv_int8", "gemm_int8") and rng.random() < DYNAMIC_P:  # drawn last: other kernels keep theirs
        spec["dynamic"] = True
    if family in ("conv", "depthwise") and rng.random() < SHAPED_P:  # after all the rest, likewise
        spec |= _shaped(rng, spec)
    if family == "other" and rng.random() < REDUCE_P:
        spec = {"family": family, **_reduce(rng)}
    if family == "gemm" and rng.random() < LARGE_GEMM_P:
        spec |= _large_gemm(rng)
    elif family in ("gemm", "gemm_int8") and rng.random() < GEMM_ROWS_P:
        spec["m"] = _rows(rng, spec["k"] * spec["n"])
    return spec


def _channels(rng: np.random.Generator, lo: int = 4, hi: int = 2048) -> int:
    """Half the time a channel count CNNs commonly use; otherwise log-uniform, mostly rounded to
    multiples of 8 (what width multipliers round to), some of 16, a few arbitrary."""
    typical = [c for c in TYPICAL_CHANNELS if lo <= c <= hi]
    if typical and rng.random() < 0.5:
        return int(rng.choice(typical))
    c = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    r = rng.random()
    step = 8 if r < 0.75 else 16 if r < 0.9 else 1
    return max(step, int(round(c / step)) * step)


def _resolution(rng: np.random.Generator) -> int:
    if rng.random() < 0.9:
        return int(rng.choice(RESOLUTIONS))
    return int(rng.integers(3, 129))


def _conv(rng: np.random.Generator, depthwise: bool = False) -> Spec:
    if depthwise:
        k = int(rng.choice((3, 5, 7), p=(0.5, 0.25, 0.25)))
    else:
        k = int(rng.choice((1, 3, 5, 7), p=(0.5, 0.38, 0.07, 0.05)))
    stride = int(rng.choice((1, 2), p=(0.7, 0.3)))
    h = _resolution(rng)
    if rng.random() < 0.05 and not depthwise:
        cin = 3
    else:
        cin = _channels(rng)
    cout = cin if depthwise else _channels(rng)
    group = cin if depthwise else 1
    if not depthwise and rng.random() < 0.08:
        group = int(rng.choice((2, 3, 4, 8)))
        cin, cout = max(group, cin // group * group), max(group, cout // group * group)
    # Keep each kernel a few tens of milliseconds at most: shrink the image, then the channels.
    while h > 2 and _conv_macs(cin, cout, k, stride, h, group) > MAX_MACS:
        h = max(2, h * 3 // 4)
    while cin > 8 and (cout * cin // group * k * k > MAX_ELEMENTS or cin * h * h > MAX_ELEMENTS
                       or _conv_macs(cin, cout, k, stride, h, group) > MAX_MACS):
        if depthwise:
            cin = cout = group = cin // 2
        else:
            cin, cout = max(group, cin // 2 // group * group), max(group, cout // 2 // group * group)
    pad = k // 2 if rng.random() < 0.95 else 0
    h = max(h, k - 2 * pad)
    act = CONV_ACTS[int(rng.choice(len(CONV_ACTS), p=CONV_ACT_P))]
    residual = not depthwise and rng.random() < 0.2
    if residual:
        act = None if rng.random() < 0.5 else "Relu"
    return {"cin": cin, "cout": cout, "k": k, "stride": stride, "h": h, "w": h, "group": group, "pad": pad,
            "act": act, "residual": residual}


def _conv_macs(cin: int, cout: int, k: int, stride: int, h: int, group: int) -> float:
    ho = max(1, h // stride)
    return cout * ho * ho * cin / group * k * k


def _shaped(rng: np.random.Generator, spec: Spec) -> Spec:
    """A square conv spec made 1-D (rank 3, as Conv1d exports: speech, audio and byte-sequence
    models, with now and then a long strided kernel as audio front ends have), a (k, 1) conv over
    an image one column wide (sequence models written as 2-D), or a rectangular one (text lines:
    a wide image, maybe a (1, k) or (k, 1) kernel, a (2, 1) or (1, 2) stride). Drawn after the rest
    of the spec; the sizes then shrink to the same limits as the square kernels'."""
    k, s, pad = spec["k"], spec["stride"], spec["pad"]
    r = rng.random()
    length = int(math.exp(rng.uniform(0.0, math.log(4096))))
    if r < 0.5:
        out: Spec = {"rank": 3, "h": length, "w": 1, "kw": 1, "sw": 1, "pad_w": 0}
        if spec["group"] == 1 and rng.random() < 0.1:  # an audio front end: a long kernel, half of it the stride
            k = int(rng.choice((10, 64, 128, 256, 400)))
            out |= {"k": k, "stride": k // 2, "pad": 0, "cin": spec["cin"] if rng.random() < 0.5 else 1,
                    "h": max(length, k) * 4}
    elif r < 0.7:
        out = {"h": length, "w": 1, "kw": 1, "sw": 1, "pad_w": 0}
    else:
        h = spec["h"]
        w = max(1, int(h * rng.choice((0.25, 0.5, 2.0, 4.0, 8.0))))
        kh, kw = [(k, k), (1, k), (k, 1)][int(rng.choice(3, p=(0.5, 0.25, 0.25)))]
        sh, sw = [(s, s), (2, 1), (1, 2)][int(rng.choice(3, p=(0.5, 0.3, 0.2)))]
        out = {"w": w, "k": kh, "kw": kw, "stride": sh, "sw": sw, "pad": kh // 2 if pad else 0,
               "pad_w": kw // 2 if pad else 0}
    g = {**spec, **out}
    while conv_macs(g) > MAX_MACS or g["cin"] * g["h"] * g["w"] > MAX_ELEMENTS:
        if g["h"] >= g["w"] and g["h"] > max(2, g["k"]):
            g["h"] = max(2, g["h"] * 3 // 4, g["k"])
        elif g["w"] > max(2, g["kw"]):
            g["w"] = max(2, g["w"] * 3 // 4, g["kw"])
        elif g["cin"] > 8:
            if g["group"] == g["cin"]:  # depthwise
                g["cin"] = g["cout"] = g["group"] = g["cin"] // 2
            else:
                gr = g["group"]
                g["cin"], g["cout"] = max(gr, g["cin"] // 2 // gr * gr), max(gr, g["cout"] // 2 // gr * gr)
        else:
            break
    g["h"] = max(g["h"], g["k"] - 2 * g["pad"])
    g["w"] = max(g["w"], g["kw"] - 2 * g["pad_w"])  # every branch above sets kw and pad_w
    g["residual"] = False  # the NCHWc residual of `build` is a 2-D square case
    return {key: g[key] for key in ("cin", "cout", "group", "h", "w", "k", "stride", "pad", "residual", *out)}


class ConvGeometry(NamedTuple):
    """A conv spec's input, weight and output shapes and its Conv attributes."""

    x: list[int]
    w: list[int]
    out: list[int]
    attrs: dict[str, Any]


def conv_geometry(spec: Spec) -> ConvGeometry:
    """A conv spec's shapes and attributes: square by default (`k`, `stride`, `pad` on both
    axes of an h x w image), else as `_shaped` drew it (`kw`, `sw`, `pad_w` for the second axis;
    `rank` 3 for a 1-D conv over `h`)."""
    k, s, p = spec["k"], spec["stride"], spec["pad"]
    kw: int = spec.get("kw") or k
    sw: int = spec.get("sw") or s
    pw: int = spec["pad_w"] if "pad_w" in spec else p
    cin, cout, g, h, w = spec["cin"], spec["cout"], spec["group"], spec["h"], spec["w"]
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * pw - kw) // sw + 1
    if spec.get("rank", 4) == 3:
        return ConvGeometry([1, cin, h], [cout, cin // g, k], [1, cout, ho],
                            {"kernel_shape": [k], "strides": [s], "pads": [p, p], "group": g})
    return ConvGeometry([1, cin, h, w], [cout, cin // g, k, kw], [1, cout, ho, wo],
                        {"kernel_shape": [k, kw], "strides": [s, sw], "pads": [p, pw, p, pw], "group": g})


def conv_macs(spec: Spec) -> float:
    """Multiply-accumulates of a conv spec (any shape `conv_geometry` builds)."""
    geo = conv_geometry(spec)
    return float(np.prod(geo.out)) * float(np.prod(geo.w[1:]))


def _gemm(rng: np.random.Generator) -> Spec:
    k = int(math.exp(rng.uniform(math.log(16), math.log(25088))))
    n = int(math.exp(rng.uniform(math.log(8), math.log(4096))))
    while k * n > (40_000_000 if rng.random() < 0.1 else 4_000_000):
        k, n = max(16, k * 3 // 4), max(8, n * 3 // 4)
    op = "Gemm" if rng.random() < 0.8 else "MatMul"
    act = "Relu" if rng.random() < 0.4 else None
    return {"op": op, "m": 1, "k": k, "n": n, "act": act}


def _large_gemm(rng: np.random.Generator) -> Spec:
    """The weight shape of a gemm beyond the caches: 6-128 M weights, log-uniform, as k x n
    with k of 1,024-51,200 and n of 256-8,192."""
    weights = math.exp(rng.uniform(math.log(6.0e6), math.log(1.28e8)))
    k = int(math.exp(rng.uniform(math.log(max(1024.0, weights / 8192)), math.log(min(51200.0, weights / 256)))))
    return {"k": k, "n": int(weights // k)}


def _rows(rng: np.random.Generator, weights: int) -> int:
    """Rows of a gemm with `weights` weights: 2-512, log-uniform, within `MAX_MACS`."""
    return max(2, min(int(math.exp(rng.uniform(math.log(2), math.log(513)))), int(MAX_MACS // weights)))


def _pool(rng: np.random.Generator) -> Spec:
    op = str(rng.choice(("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"), p=(0.35, 0.35, 0.25, 0.05)))
    c, h = _channels(rng), _resolution(rng)
    while c * h * h > MAX_ELEMENTS:
        h = h * 3 // 4
    k = int(rng.choice((2, 3, 5), p=(0.35, 0.55, 0.1)))
    stride = int(rng.choice((1, 2), p=(0.4, 0.6)))
    h = max(h, k)
    pad = k // 2 if (rng.random() < 0.6 and k > 2) else 0
    return {"op": op, "c": c, "h": h, "w": h, "k": k, "stride": stride, "pad": pad,
            "count_include_pad": int(rng.random() < 0.3)}


def _elementwise(rng: np.random.Generator) -> Spec:
    op = str(rng.choice(("unary", "Add", "Mul", "Sum", "BatchNormalization"), p=(0.4, 0.3, 0.15, 0.05, 0.1)))
    variant = "tensor"
    if op == "unary":
        op = str(rng.choice(UNARY, p=(0.3, 0.2, 0.15, 0.15, 0.05, 0.1, 0.05)))
    elif op in ("Add", "Mul"):
        variant = str(rng.choice(("tensor", "channel", "scalar"), p=(0.6, 0.2, 0.2)))
    c, h = _channels(rng), _resolution(rng)
    while c * h * h > MAX_ELEMENTS:
        h = h * 3 // 4
    rank2 = rng.random() < 0.08
    h = 1 if rank2 else h
    if rng.random() < PRELU_P:
        op, variant = "PRelu", "channel" if rng.random() < 0.8 else "scalar"
    return {"op": op, "c": c, "h": h, "w": h, "variant": variant, "rank": 2 if rank2 else 4}


def _movement(rng: np.random.Generator) -> Spec:
    h = _resolution(rng)
    if rng.random() < 0.6:
        cs = [_channels(rng, 4, 512) for _ in range(int(rng.integers(2, 5)))]
        while sum(cs) * h * h > MAX_ELEMENTS:
            h = h * 3 // 4
        return {"op": "Concat", "cs": cs, "h": max(h, 1), "w": max(h, 1)}
    groups = int(rng.choice((2, 3, 4, 8)))
    c = max(groups, _channels(rng, 8, 1024) // groups * groups)
    while c * h * h > MAX_ELEMENTS:
        h = h * 3 // 4
    return {"op": "Transpose", "shape": [1, groups, c // groups, max(h, 1), max(h, 1)], "perm": [0, 2, 1, 3, 4]}


def _other(rng: np.random.Generator) -> Spec:
    if rng.random() < 0.5:
        return {"op": "Softmax", "n": int(math.exp(rng.uniform(math.log(10), math.log(10000))))}
    c, h = _channels(rng, 16, 512), _resolution(rng)
    while c * h * h > MAX_ELEMENTS:
        h = h * 3 // 4
    return {"op": "LRN", "c": c, "h": max(h, 1), "w": max(h, 1), "size": 5}


def _reduce(rng: np.random.Generator) -> Spec:
    """A reduction of a [1, rows, cols] tensor over its last axis (a layer norm's statistics),
    its middle one (pooling over a sequence: onnxruntime strides through memory there) or both."""
    op = str(rng.choice(REDUCE_OPS, p=(0.4, 0.35, 0.15, 0.1)))
    rows = int(math.exp(rng.uniform(0.0, math.log(4096))))
    cols = _channels(rng, 1, 4096) if rng.random() < 0.8 else int(math.exp(rng.uniform(0.0, math.log(4096))))
    while rows * cols > MAX_ELEMENTS:
        rows = max(1, rows * 3 // 4)
    axes = [[2], [1], [1, 2]][int(rng.choice(3, p=(0.45, 0.4, 0.15)))]
    return {"op": op, "shape": [1, rows, cols], "axes": axes, "keepdims": int(rng.random() < 0.5)}


FLUSH_INPUT = "aux_flush"


def flush_elements(flush_mb: float) -> int:
    return max(1, int(flush_mb * 2**20) // 4)


def _conv_int8(rng: np.random.Generator, depthwise: bool = False) -> Spec:
    # No residual: an integer conv does not take in the sum (QLinearAdd is a kernel of its own);
    # of the activations, it takes in only a Relu or Clip (others run as kernels of their own).
    spec = {**_conv(rng, depthwise), "residual": False}
    if spec["act"] not in (None, "Relu", "Clip"):
        spec["act"] = "Relu"
    return spec


def _add_int8(rng: np.random.Generator) -> Spec:
    """A residual Add of two tensors on 8-bit grids (quantized convs' outputs), maybe with a Relu."""
    c, h = _channels(rng), _resolution(rng)
    while c * h * h > MAX_ELEMENTS:
        h = h * 3 // 4
    return {"c": c, "h": max(h, 1), "w": max(h, 1), "act": "Relu" if rng.random() < 0.5 else None}


def _recurrent(rng: np.random.Generator) -> Spec:
    """One LSTM or GRU layer over a sequence, sizes as speech and text models use them."""
    op = RECURRENT_OPS[int(rng.random() < 0.4)]
    hidden = _channels(rng, 16, 1024)
    inputs = _channels(rng, 16, 1024)
    seq = int(math.exp(rng.uniform(0.0, math.log(256))))
    batch = int(rng.choice((1, 2, 4, 8), p=(0.7, 0.1, 0.1, 0.1)))
    directions = 2 if rng.random() < 0.3 else 1
    gates = 4 if op == "LSTM" else 3
    while seq > 1 and seq * batch * directions * gates * hidden * (inputs + hidden) > MAX_RECURRENT_MACS:
        seq = seq * 3 // 4
    while seq * batch * directions * gates * hidden * (inputs + hidden) > MAX_RECURRENT_MACS:
        hidden, inputs = max(16, hidden // 2), max(16, inputs // 2)
    if op == "LSTM" and rng.random() < QUANTIZED_LSTM_P:
        op = "DynamicQuantizeLSTM"
    return {"op": op, "seq": seq, "batch": batch, "input": inputs, "hidden": hidden, "directions": directions}


_SAMPLERS = {"conv": _conv, "depthwise": lambda rng: _conv(rng, depthwise=True), "gemm": _gemm, "pool": _pool,
             "elementwise": _elementwise, "movement": _movement, "other": _other, "conv_int8": _conv_int8,
             "depthwise_int8": lambda rng: _conv_int8(rng, depthwise=True), "gemm_int8": _gemm,
             "add_int8": _add_int8, "recurrent": _recurrent}


class _Builder:
    """Collects nodes, inputs and initializers of one kernel model."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.inits: list[onnx.TensorProto] = []

    def input(self, name: str, shape: list[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        return name

    def const(self, name: str, shape: list[int] | tuple[int, ...], scale: float = 0.1) -> str:
        if math.prod(shape) > LARGE_CONST:  # in float32 directly: no float64 copy of up to 512 MB of weights
            array = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        else:
            array = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def scalar(self, name: str, value: float) -> str:
        self.inits.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def hot_input(self, name: str, shape: list[int], flush_mb: float) -> str:
        """An input that the kernel finds in cache, after `flush_mb` of other memory was read (a
        ReduceMax that the input then depends on, through an Add of zero)."""
        x = self.input(name, shape)
        if not flush_mb:
            return x
        self.input(FLUSH_INPUT, [flush_elements(flush_mb)])
        peak = self.node("ReduceMax", [FLUSH_INPUT], "aux_flush_max", keepdims=0)
        zero = self.node("Mul", [peak, self.scalar("aux_zero", 0.0)], "aux_flush_zero")
        return self.node("Add", [x, zero], "aux_hot")

    def act(self, op: str | None, x: str, prefix: str = "k") -> str:
        if op is None:
            return x
        if op == "Clip":
            return self.node("Clip", [x, self.scalar(f"{prefix}_lo", 0.0), self.scalar(f"{prefix}_hi", 6.0)],
                             f"{prefix}_act")
        return self.node(op, [x], f"{prefix}_act")

    def model(self, output: str) -> onnx.ModelProto:
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, "kernel", self.inputs, [out], initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwnas-calibrate")
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m, strict_mode=True)


def build(spec: Spec) -> onnx.ModelProto:
    """The single-kernel ONNX model of `spec`; its main node is named `k_main`. An integer
    kernel's model is still float here (`prepare` quantizes it); its output goes on to a float
    `aux_out` reader, so that the kernel writes an 8-bit output grid as inside a network (hwnas
    keeps a graph output in float)."""
    b = _Builder()
    family = spec["family"]
    if spec.get("dynamic"):
        return _dynamic_model(b, spec)
    if family in INT8_FAMILIES:
        if family == "add_int8":
            # Each input is an 8-bit grid written by a quantized 1x1 depthwise conv (aux_).
            shape = [1, spec["c"], spec["h"], spec["w"]]
            xs = [b.node("Conv", [b.input(f"x{i}", shape), b.const(f"aux_w{i}", [spec["c"], 1, 1, 1])], f"aux_conv{i}",
                         kernel_shape=[1, 1], group=spec["c"]) for i in range(2)]
            y = b.act(spec["act"], b.node("Add", xs, "k_main"))
        else:
            inner = build({**spec, "family": family.removesuffix("_int8")})
            b.nodes, b.inputs, b.inits = list(inner.graph.node), list(inner.graph.input), list(inner.graph.initializer)
            y = inner.graph.output[0].name
        return b.model(b.node("Sigmoid", [y], "aux_out"))
    if family == "recurrent":
        return _recurrent_model(b, spec)
    if family in ("conv", "depthwise"):
        geo, cout = conv_geometry(spec), spec["cout"]
        x = b.hot_input("x", geo.x, spec.get("flush_mb", 0.0))
        w, bias = b.const("k_w", geo.w), b.const("k_b", [cout])
        y = b.node("Conv", [x, w, bias], "k_main", **geo.attrs)
        if spec.get("residual"):
            # The residual must already be NCHWc (a conv's output) for onnxruntime to fuse the sum;
            # a 1x1 depthwise conv with its own ReLU makes one cheaply, and cannot take the sum itself.
            r = b.input("aux_in", geo.out)
            r = b.node("Conv", [r, b.const("aux_w", [cout, 1, 1, 1]), b.const("aux_b", [cout])], "aux_conv",
                       kernel_shape=[1, 1], group=cout)
            r = b.node("Relu", [r], "aux_relu")
            y = b.node("Add", [y, r], "k_sum")
        return b.model(b.act(spec["act"], y))
    if family == "gemm":
        x = b.hot_input("x", [spec["m"], spec["k"]], spec.get("flush_mb", 0.0))
        if spec["op"] == "Gemm":
            y = b.node("Gemm", [x, b.const("k_w", [spec["n"], spec["k"]]), b.const("k_b", [spec["n"]])], "k_main",
                       transB=1)
        else:
            y = b.node("MatMul", [x, b.const("k_w", [spec["k"], spec["n"]])], "k_main")
        return b.model(b.act(spec["act"], y))
    if family == "pool":
        x = b.input("x", [1, spec["c"], spec["h"], spec["w"]])
        op = spec["op"]
        if op.startswith("Global"):
            return b.model(b.node(op, [x], "k_main"))
        k, s, p = spec["k"], spec["stride"], spec["pad"]
        attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
        if op == "AveragePool":
            attrs["count_include_pad"] = spec["count_include_pad"]
        return b.model(b.node(op, [x], "k_main", **attrs))
    if family == "elementwise":
        return b.model(_elementwise_node(b, spec))
    if family == "movement":
        if spec["op"] == "Concat":
            xs = [b.input(f"x{i}", [1, c, spec["h"], spec["w"]]) for i, c in enumerate(spec["cs"])]
            return b.model(b.node("Concat", xs, "k_main", axis=1))
        x = b.input("x", spec["shape"])
        return b.model(b.node("Transpose", [x], "k_main", perm=spec["perm"]))
    if spec["op"] in REDUCE_OPS:
        x = b.input("x", spec["shape"])
        if spec["op"] == "ReduceSum":  # its axes are an input from opset 13, the others' from 18
            axes = numpy_helper.from_array(np.array(spec["axes"], np.int64), "k_axes")
            b.inits.append(axes)
            return b.model(b.node("ReduceSum", [x, "k_axes"], "k_main", keepdims=spec["keepdims"]))
        return b.model(b.node(spec["op"], [x], "k_main", axes=spec["axes"], keepdims=spec["keepdims"]))
    if spec["op"] == "Softmax":
        return b.model(b.node("Softmax", [b.input("x", [1, spec["n"]])], "k_main", axis=-1))
    x = b.input("x", [1, spec["c"], spec["h"], spec["w"]])
    return b.model(b.node("LRN", [x], "k_main", size=spec["size"], alpha=1e-4, beta=0.75, bias=1.0))


def _elementwise_node(b: _Builder, spec: Spec) -> str:
    op, c = spec["op"], spec["c"]
    shape = [1, c] if spec["rank"] == 2 else [1, c, spec["h"], spec["w"]]
    x = b.input("x", shape)
    if op in UNARY:
        if op == "Clip":
            return b.node("Clip", [x, b.scalar("k_lo", 0.0), b.scalar("k_hi", 6.0)], "k_main")
        return b.node(op, [x], "k_main")
    if op == "BatchNormalization":
        params = [b.const(f"k_bn{i}", [c]) for i in range(3)]
        b.inits.append(numpy_helper.from_array(np.ones(c, np.float32), "k_var"))
        return b.node("BatchNormalization", [x, *params, "k_var"], "k_main")
    if op == "Sum":
        return b.node("Sum", [x, b.input("x1", shape), b.input("x2", shape)], "k_main")
    variant = spec["variant"]
    if op == "PRelu":  # the slope broadcast over a tensor of the same rank, as CNNs export it
        slope = [c] + [1] * (len(shape) - 2) if variant == "channel" else [1] * (len(shape) - 1)
        return b.node("PRelu", [x, b.const("k_slope", slope)], "k_main")
    if variant == "tensor":
        other = b.input("x1", shape)
    elif variant == "channel":
        other = b.const("k_c", [c] + [1] * (len(shape) - 2))
    else:
        other = b.scalar("k_s", 0.0 if op == "Mul" else 1.0)
    return b.node(op, [x, other], "k_main")


def _recurrent_model(b: _Builder, spec: Spec) -> onnx.ModelProto:
    op, d, h = spec["op"], spec["directions"], spec["hidden"]
    if op == "DynamicQuantizeLSTM":
        return _quantized_lstm_model(b, spec)
    gates = 4 if op == "LSTM" else 3
    x = b.input("x", [spec["seq"], spec["batch"], spec["input"]])
    w, r = b.const("k_w", [d, gates * h, spec["input"]]), b.const("k_r", [d, gates * h, h])
    bias = b.const("k_bias", [d, 2 * gates * h])
    direction = "bidirectional" if d == 2 else "forward"
    return b.model(b.node(op, [x, w, r, bias], "k_main", hidden_size=h, direction=direction))


def _dynamic_model(b: _Builder, spec: Spec) -> onnx.ModelProto:
    """A conv or gemm as onnxruntime's `quantize_dynamic` writes it (`DYNAMIC_P`): the input
    quantized at run time (aux_), ConvInteger or MatMulInteger (`k_main`, uint8 weights, int32
    out), then Cast and Mul by the scales (aux_). No activation: the float ops after it run as
    kernels of their own."""
    conv = spec["family"] == "conv_int8"
    geo = conv_geometry(spec) if conv else ConvGeometry([spec["m"], spec["k"]], [spec["k"], spec["n"]], [], {})
    x = b.hot_input("x", geo.x, spec.get("flush_mb", 0.0))
    b.nodes.append(helper.make_node("DynamicQuantizeLinear", [x], ["aux_xq", "aux_xs", "aux_xz"], name="aux_quant"))
    wshape = geo.w
    b.inits += [numpy_helper.from_array(b.rng.integers(0, 256, size=wshape, dtype=np.uint8), "k_w"),
                numpy_helper.from_array(np.array(128, np.uint8), "k_wz")]
    inputs = ["aux_xq", "k_w", "aux_xz", "k_wz"]
    if conv:
        y = b.node("ConvInteger", inputs, "k_main", **geo.attrs)
    else:
        y = b.node("MatMulInteger", inputs, "k_main")
    y = b.node("Cast", [y], "aux_cast", to=TensorProto.FLOAT)
    scale = b.node("Mul", ["aux_xs", b.scalar("aux_ws", 0.01)], "aux_scale")
    return b.model(b.node("Mul", [y, scale], "aux_out"))


def _quantized_lstm_model(b: _Builder, spec: Spec) -> onnx.ModelProto:
    """onnxruntime's com.microsoft::DynamicQuantizeLSTM as `quantize_dynamic` writes it: W and R
    in int8, transposed ([directions, input or hidden, 4·hidden]), a scale and zero point per
    direction. onnx has no schema of it, so the model's shapes are given rather than inferred."""
    d, h, n = spec["directions"], spec["hidden"], spec["input"]
    x = b.input("x", [spec["seq"], spec["batch"], n])
    for name, rows in (("k_w", n), ("k_r", h)):
        q = b.rng.integers(-127, 128, size=(d, rows, 4 * h), dtype=np.int8)
        b.inits += [numpy_helper.from_array(q, name),
                    numpy_helper.from_array(np.full(d, 0.01, np.float32), f"{name}_scale"),
                    numpy_helper.from_array(np.zeros(d, np.int8), f"{name}_zero_point")]
    bias = b.const("k_bias", [d, 8 * h])
    b.nodes.append(helper.make_node(
        "DynamicQuantizeLSTM", [x, "k_w", "k_r", bias, "", "", "", "", "k_w_scale", "k_w_zero_point", "k_r_scale",
                                "k_r_zero_point"], ["k_main"], name="k_main", domain="com.microsoft",
        hidden_size=h, direction="bidirectional" if d == 2 else "forward"))
    out = helper.make_tensor_value_info("k_main", TensorProto.FLOAT, [spec["seq"], d, spec["batch"], h])
    graph = helper.make_graph(b.nodes, "kernel", b.inputs, [out], initializer=b.inits)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="hwnas-calibrate")
    m.ir_version = 8
    return m


CALIB_SAMPLES = 2


def prepare(spec: Spec) -> tuple[Graph, onnx.ModelProto]:
    """The kernel's canonical IR graph (the form `estimate` prices; for an integer kernel, as
    hwnas's `quantize` pass annotates it) and the ONNX model to time (its QDQ emission)."""
    from hwnas.backends.emit.qdq import to_qdq_onnx
    from hwnas.passes.quantize import prepare_layers, quantize_layers

    model = build(spec)
    graph = _canonical(model)
    if spec["family"] not in INT8_FAMILIES or spec.get("dynamic"):
        return graph, model
    # What `quantize{w_bits=8,a_bits=8}` does, calibrated on random inputs (two, not its default
    # 32, which would take longer than timing the kernel), on the model without the cache-flushing
    # input (calibration batches every input); the annotations then go to the same nodes with it.
    plain = model if not spec.get("flush_mb") else build({**spec, "flush_mb": 0.0})
    rng = np.random.default_rng(0)
    # A gemm's rows are its batch: one run of it is that many samples.
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in plain.graph.input}
    calib = {name: rng.standard_normal([max(CALIB_SAMPLES, d[0]), *d[1:]], dtype=np.float32)
             for name, d in dims.items()}
    quantized = graph if plain is model else _canonical(plain)
    nodes, _ = prepare_layers(quantized, "quantize")
    quantize_layers(quantized, {n.name: (8, 8) for n in nodes}, calib=calib)
    if quantized is not graph:
        specs = {_base(n.name): n.ann.quant for n in quantized.nodes}
        for n in graph.nodes:
            n.ann.quant = specs.get(_base(n.name))
    return graph, to_qdq_onnx(graph)


def _canonical(model: onnx.ModelProto) -> Graph:
    from hwnas.frontends.onnx import import_onnx
    from hwnas.passes import PassRunner, parse_pipeline

    return PassRunner().run(parse_pipeline("canonicalize"), import_onnx(model)).graph


def _base(name: str) -> str:
    """A node's name from the kernel model, without the index the importer appends."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name
