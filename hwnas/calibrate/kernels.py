"""Single-kernel ONNX models to calibrate on, sampled over the configurations CNNs use.

A kernel is a JSON-able spec (`{"family": "conv", "cin": 32, ...}`) that `build` turns into an
ONNX model. Spec i of a calibration depends only on (seed, i), so a longer or interrupted run
continues with the same kernels. Helper nodes that only set up the context (the NCHWc residual
of a fused Conv+Add; the read of other memory that evicts a layer's weights from the caches, as
the rest of a network does between two of its runs) are named `aux_*` and excluded when timing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Spec = dict[str, Any]

FAMILIES = ("conv", "depthwise", "gemm", "pool", "elementwise", "movement", "other")
WEIGHTS = (0.38, 0.20, 0.05, 0.09, 0.19, 0.06, 0.03)
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
MAX_MACS = 2.0e9
MAX_ELEMENTS = 3 * 2**20
OPSET = 17


def sample_spec(seed: int, index: int) -> Spec:
    """Kernel `index` of the calibration drawn with `seed`."""
    rng = np.random.default_rng([seed, index])
    family = FAMILIES[int(rng.choice(len(FAMILIES), p=WEIGHTS))]
    spec = {"family": family, **_SAMPLERS[family](rng)}
    if family in WEIGHTED:
        # Inside a network, the rest of the model runs between two runs of a layer and may evict
        # its weights from the caches (32 MiB of L3 here): time some kernels after streaming
        # through that much other memory, as `flush_mb`.
        spec["flush_mb"] = 0.0 if rng.random() < 0.35 else round(math.exp(rng.uniform(math.log(0.5),
                                                                                          math.log(MAX_FLUSH_MB))), 2)
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


def _gemm(rng: np.random.Generator) -> Spec:
    k = int(math.exp(rng.uniform(math.log(16), math.log(25088))))
    n = int(math.exp(rng.uniform(math.log(8), math.log(4096))))
    while k * n > (40_000_000 if rng.random() < 0.1 else 4_000_000):
        k, n = max(16, k * 3 // 4), max(8, n * 3 // 4)
    op = "Gemm" if rng.random() < 0.8 else "MatMul"
    act = "Relu" if rng.random() < 0.4 else None
    return {"op": op, "m": 1, "k": k, "n": n, "act": act}


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


FLUSH_INPUT = "aux_flush"


def flush_elements(flush_mb: float) -> int:
    return max(1, int(flush_mb * 2**20) // 4)


_SAMPLERS = {"conv": _conv, "depthwise": lambda rng: _conv(rng, depthwise=True), "gemm": _gemm, "pool": _pool,
             "elementwise": _elementwise, "movement": _movement, "other": _other}


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
    """The single-kernel ONNX model of `spec`; its main node is named `k_main`."""
    b = _Builder()
    family = spec["family"]
    if family in ("conv", "depthwise"):
        cin, cout, k, s, g = spec["cin"], spec["cout"], spec["k"], spec["stride"], spec["group"]
        x = b.hot_input("x", [1, cin, spec["h"], spec["w"]], spec.get("flush_mb", 0.0))
        w, bias = b.const("k_w", [cout, cin // g, k, k]), b.const("k_b", [cout])
        y = b.node("Conv", [x, w, bias], "k_main", kernel_shape=[k, k], strides=[s, s], pads=[spec["pad"]] * 4, group=g)
        if spec.get("residual"):
            ho = (spec["h"] + 2 * spec["pad"] - k) // s + 1
            wo = (spec["w"] + 2 * spec["pad"] - k) // s + 1
            # The residual must already be NCHWc (a conv's output) for onnxruntime to fuse the sum;
            # a 1x1 depthwise conv with its own ReLU makes one cheaply, and cannot take the sum itself.
            r = b.input("aux_in", [1, cout, ho, wo])
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
    if variant == "tensor":
        other = b.input("x1", shape)
    elif variant == "channel":
        other = b.const("k_c", [c] + [1] * (len(shape) - 2))
    else:
        other = b.scalar("k_s", 0.0 if op == "Mul" else 1.0)
    return b.node(op, [x, other], "k_main")
