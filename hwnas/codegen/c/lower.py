"""Lower each node of a quantized graph to a call of an int8 kernel (runtime/hwnas_kernels.c).

One function per op, registered with `@lowers("Conv", ...)`; each reads the node's grids
and the memory plan and appends C: constant parameter blocks (flash) and the call.
Integer weights are computed with the QDQ emission's own grid functions, so the C model
holds the integers onnxruntime runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np

from hwnas.backends.emit.qdq import (
    bias_scale_floor,
    fake_quant_bias,
    fake_quant_weight,
    quantized_bias,
    weight_axis,
)
from hwnas.codegen.c.grids import CodegenError, Grid, int8_zero_point, quantize_multiplier
from hwnas.codegen.c.plan import MemoryPlan
from hwnas.ir.graph import Node, Value

Lowerer = Callable[["Lowering", Node], None]
LOWERERS: dict[str, Lowerer] = {}
Requantize = Literal["fixed", "onnxruntime"]
VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")


def lowers(*ops: str) -> Callable[[Lowerer], Lowerer]:
    """Register a lowering function for ops."""
    def decorate(fn: Lowerer) -> Lowerer:
        for op in ops:
            LOWERERS[op] = fn
        return fn
    return decorate


@dataclass
class Lowering:
    """C being built for one graph: constant declarations, the body of model_run, and flash
    figures (weight and bias bytes as stored)."""

    plan: MemoryPlan
    grids: dict[str, Grid]
    requantize: Requantize = "fixed"
    """How layers requantize: "fixed" (Q31 multiplier and shift, CMSIS-NN's) or "onnxruntime"
    (a float32 scale per channel, as its CPU kernels do: outputs bit-equal to its run)."""
    consts: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    weight_bytes: int = 0
    clamped: dict[str, tuple[int, int]] = field(default_factory=dict)
    _count: int = 0

    def name(self, base: str) -> str:
        """A fresh C identifier."""
        self._count += 1
        return f"{base}_{self._count}"

    def ptr(self, v: Value) -> str:
        """C expression of the value's place in the arena."""
        return f"(model_arena + {self.plan.offset(v)})"

    def same_buffer(self, a: Value, b: Value) -> bool:
        """Whether the plan puts a and b in one buffer (a view, or in place)."""
        return self.plan.buffer_of[a.name] == self.plan.buffer_of[b.name]

    def grid(self, node: Node, v: Value) -> Grid:
        """The int8 grid of v, or a CodegenError naming the node."""
        g = self.grids.get(v.name)
        if g is None:
            raise CodegenError(f"node '{node.name}' ({node.op}): tensor '{v.name}' is float (no 8-bit grid); "
                               "the C backend runs int8 only: quantize the model first")
        return g

    def array(self, base: str, ctype: str, values: np.ndarray) -> str:
        """Declare a const array in flash; returns its name."""
        name = self.name(base)
        arr = np.asarray(values).reshape(-1)
        flat = [_float(np.float32(x)) for x in arr] if ctype == "float" else [str(int(x)) for x in arr]
        lines = ",\n    ".join(", ".join(flat[i : i + 24]) for i in range(0, len(flat), 24))
        self.consts.append(f"static const {ctype} {name}[{max(len(flat), 1)}] = {{\n    {lines or '0'}\n}};")
        return name

    def params(self, ctype: str, fields: dict[str, object]) -> str:
        """Declare a const parameter block; returns the expression of its address."""
        name = self.name(ctype.removeprefix("hw_").removesuffix("_params"))
        body = ", ".join(f".{k} = {v}" for k, v in fields.items())
        self.consts.append(f"static const {ctype} {name} = {{{body}}};")
        return f"&{name}"

    def call(self, node: Node, text: str) -> None:
        """Append a statement of model_run, commented with the node it runs."""
        self.body.append(f"    {text} /* {node.op} {node.name.replace('*/', '* /')} */")

    def activation_range(self, node: Node, out: Value) -> tuple[Value, int, int]:
        """Where a kernel writes and the range it clamps to: when the only reader of its output
        is a Relu or Clip working in place on the same grid, the kernel applies it."""
        lo, hi = -128, 127
        users = out.users
        if len(users) == 1 and users[0].op in ("Relu", "Clip") and not users[0].domain:
            act = users[0]
            y = act.outputs[0]
            if self.same_buffer(out, y) and self.grids.get(y.name) == self.grids.get(out.name):
                lo, hi = clamp_range(act, self.grid(act, y))
        self.clamped[out.name] = (lo, hi)
        return out, lo, hi


def lower_node(low: Lowering, node: Node) -> None:
    """Append the C for one node, or a CodegenError naming it when the backend lacks its op."""
    fn = LOWERERS.get(node.op) if not node.domain else None
    if fn is None:
        known = ", ".join(sorted(LOWERERS))
        raise CodegenError(f"node '{node.name}' ({node.qualified_op}): the C backend has no kernel for this op "
                           f"(it has: {known})")
    fn(low, node)


def shape_of(node: Node, v: Value | None) -> tuple[int, ...]:
    """The static shape of v, or a CodegenError naming the node."""
    shape = v.static_shape if v is not None else None
    if shape is None:
        raise CodegenError(f"node '{node.name}' ({node.op}): shape of '{v.name if v else '?'}' is not static "
                           "(bind the input dimensions first)")
    return shape


def multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q31 multipliers and shifts for real scale factors."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, np.float64).reshape(-1)]
    return np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


def clamp_range(node: Node, grid: Grid) -> tuple[int, int]:
    """The int8 range of a Relu's or Clip's output on its grid."""
    zp = int8_zero_point(grid)

    def q(x: float) -> int:
        return int(np.clip(np.rint(np.float32(x) / np.float32(grid[0])) + zp, -128, 127))

    if node.op == "Relu":
        return zp, 127
    lo_v, hi_v = node.input(1), node.input(2)
    lo = float(lo_v.const) if lo_v is not None and lo_v.const is not None else node.attr_float("min", -math.inf)
    hi = float(hi_v.const) if hi_v is not None and hi_v.const is not None else node.attr_float("max", math.inf)
    if (lo_v is not None and lo_v.const is None) or (hi_v is not None and hi_v.const is None):
        raise CodegenError(f"node '{node.name}' (Clip): bounds computed at run time")
    return (-128 if lo == -math.inf else q(lo)), (127 if hi == math.inf else q(hi))


def integer_weights(node: Node) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """(int weights, per-channel scales, int32 bias or None, weight bits) exactly as the QDQ
    emission computes them (`fake_quant_weight` with the bias floor, `fake_quant_bias`)."""
    import torch

    q = node.ann.quant
    w_v = node.input(1)
    if q is None or q.w_bits is None or q.w_bits > 8 or q.a_bits != 8 or q.a_scale is None \
            or w_v is None or w_v.const is None:
        raise CodegenError(f"node '{node.name}' ({node.op}): not quantized to int8 data and weights of 8 bits or "
                           "fewer (run quantize or quantize-mixed with a_bits=8)")
    w = torch.from_numpy(np.array(w_v.const, np.float32))
    axis = weight_axis(node, w.dim())
    fq, s = fake_quant_weight(w, q, axis, bias_scale_floor(node, w))
    shape = [1] * w.dim()
    shape[axis] = -1
    ints = torch.round(fq / s.reshape(shape)).numpy().astype(np.int64)
    bias = None
    b_v = node.input(2) if node.op in ("Conv", "Gemm") else None
    if b_v is not None:
        if not quantized_bias(node):
            raise CodegenError(f"node '{node.name}' ({node.op}): its bias is not a constant vector")
        fb, sb = fake_quant_bias(torch.from_numpy(np.array(b_v.const, np.float32)), q.a_scale, s)
        bias = torch.round(fb / sb).numpy().astype(np.int64)
    return ints, s.numpy().astype(np.float32), bias, q.w_bits


def pack_weights(ints: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """int8 storage of weights: one per byte, or for 4 bits and fewer two per byte (low
    nibble first, two's complement). Returns the bytes (as int8) and whether packed."""
    flat = ints.reshape(-1).astype(np.int64)
    if bits > 4:
        return flat.astype(np.int8), 0
    if len(flat) % 2:
        flat = np.r_[flat, 0]
    nib = (flat & 15).astype(np.uint8)
    return (nib[0::2] | (nib[1::2] << 4)).view(np.int8), 1


def requant_arrays(low: Lowering, node: Node, in_grid: Grid, scales: np.ndarray, out_grid: Grid | None,
                   bias: np.ndarray | None, wbytes: np.ndarray) -> dict[str, str]:
    """Declare weight, bias and requantization arrays of a layer; their C names: a Q31
    multiplier and shift per output channel, or (`low.requantize` "onnxruntime") its
    QLinearConv scale in float32, in_scale * w_scale / out_scale (without `out_grid`:
    in_scale * w_scale, QGemm's float output)."""
    names = {"weight": low.array("w", "int8_t", wbytes), "mult": "NULL", "shift": "NULL", "scale": "NULL",
             "bias": "NULL"}
    if low.requantize == "onnxruntime":
        real = np.float32(in_grid[0]) * scales.astype(np.float32)
        names["scale"] = low.array("scale", "float", real if out_grid is None else real / np.float32(out_grid[0]))
    else:
        assert out_grid is not None
        mult, shift = multipliers(np.float64(np.float32(in_grid[0])) * scales.astype(np.float64)
                                  / np.float64(np.float32(out_grid[0])))
        names.update(mult=low.array("mult", "int32_t", mult), shift=low.array("shift", "int32_t", shift))
    low.weight_bytes += len(wbytes)
    if bias is not None:
        if np.abs(bias).max(initial=0) >= 2**31:
            raise CodegenError(f"node '{node.name}' ({node.op}): bias does not fit int32")
        names["bias"] = low.array("bias", "int32_t", bias)
        low.weight_bytes += 4 * len(bias)
    return names


@lowers("Conv")
def conv(low: Lowering, node: Node) -> None:
    """Conv (any groups: depthwise and pointwise included), NCHW, bias and activation fused."""
    x, y = node.operand(0), node.outputs[0]
    xs, ys = shape_of(node, x), shape_of(node, y)
    if len(xs) != 4 or xs[0] != 1:
        raise CodegenError(f"node '{node.name}' (Conv): only 2-D convolutions of batch 1 (input {list(xs)})")
    ints, scales, bias, bits = integer_weights(node)
    kh, kw = ints.shape[2], ints.shape[3]
    pads = node.attr_ints("pads", [0, 0, 0, 0])
    if node.attr_str("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise CodegenError(f"node '{node.name}' (Conv): auto_pad is not supported (canonicalize makes pads explicit)")
    strides, dil = node.attr_ints("strides", [1, 1]), node.attr_ints("dilations", [1, 1])
    in_grid, out_grid = low.grid(node, x), low.grid(node, y)
    wbytes, packed = pack_weights(ints, bits)
    names = requant_arrays(low, node, in_grid, scales, out_grid, bias, wbytes)
    _, lo, hi = low.activation_range(node, y)
    p = low.params("hw_conv_params", dict(
        cin=xs[1], h=xs[2], w=xs[3], cout=ys[1], oh=ys[2], ow=ys[3], kh=kh, kw=kw, sh=strides[0], sw=strides[1],
        ph=pads[0], pw=pads[1], dh=dil[0], dw=dil[1], groups=node.attr_int("group", 1),
        in_zp=int8_zero_point(in_grid), out_zp=int8_zero_point(out_grid), act_min=lo, act_max=hi, packed=packed,
        **names))
    low.call(node, f"hw_conv({p}, {low.ptr(x)}, {low.ptr(y)});")


@lowers("Gemm", "MatMul")
def dense(low: Lowering, node: Node) -> None:
    """Gemm (transA=0, alpha=beta=1) and MatMul with a constant 2-D weight: rows x [K] · [N, K]^T."""
    x, y = node.operand(0), node.outputs[0]
    if node.op == "Gemm" and (node.attr_int("transA", 0) or node.attr_float("alpha", 1.0) != 1.0
                              or node.attr_float("beta", 1.0) != 1.0):
        raise CodegenError(f"node '{node.name}' (Gemm): only transA=0, alpha=1, beta=1")
    ints, scales, bias, bits = integer_weights(node)
    if ints.ndim != 2:
        raise CodegenError(f"node '{node.name}' ({node.op}): weight must be 2-D, not {list(ints.shape)}")
    if not (node.op == "Gemm" and node.attr_int("transB", 0)):
        ints = ints.T  # [K, N] -> [N, K]
    n, k = ints.shape
    in_grid, out_grid = low.grid(node, x), low.grid(node, y)
    wbytes, packed = pack_weights(np.ascontiguousarray(ints), bits)
    # Without an output grid in the model, onnxruntime's QGemm writes float, quantized after.
    q = node.ann.quant
    float_out = (q is None or q.o_scale is None) and low.requantize == "onnxruntime"
    names = requant_arrays(low, node, in_grid, scales, None if float_out else out_grid, bias, wbytes)
    _, lo, hi = low.activation_range(node, y)
    rows = math.prod(shape_of(node, x)) // k
    p = low.params("hw_dense_params", dict(
        rows=rows, k=k, n=n, in_zp=int8_zero_point(in_grid), out_zp=int8_zero_point(out_grid), act_min=lo,
        act_max=hi, packed=packed, **names, divide=_float(np.float32(out_grid[0]) if float_out else np.float32(0))))
    low.call(node, f"hw_dense({p}, {low.ptr(x)}, {low.ptr(y)});")


@lowers("MaxPool", "AveragePool", "GlobalAveragePool")
def pool(low: Lowering, node: Node) -> None:
    """2-D pools of batch 1; max-pool keeps the grid, average pools requantize once (with
    `requantize` "onnxruntime" as its QLinearAveragePool and QLinearGlobalAveragePool do)."""
    x, y = node.operand(0), node.outputs[0]
    xs, ys = shape_of(node, x), shape_of(node, y)
    if len(xs) != 4 or xs[0] != 1:
        raise CodegenError(f"node '{node.name}' ({node.op}): only 2-D pools of batch 1 (input {list(xs)})")
    if node.op == "GlobalAveragePool":
        kh, kw, strides, pads = xs[2], xs[3], [1, 1], [0, 0, 0, 0]
    else:
        kh, kw = node.attr_ints("kernel_shape")
        strides, pads = node.attr_ints("strides", [1, 1]), node.attr_ints("pads", [0, 0, 0, 0])
        if any(d != 1 for d in node.attr_ints("dilations", [1, 1])) or node.attr_int("storage_order", 0):
            raise CodegenError(f"node '{node.name}' ({node.op}): dilated or column-major pools are not supported")
    in_grid, out_grid = low.grid(node, x), low.grid(node, y)
    fields: dict[str, object] = dict(c=xs[1], h=xs[2], w=xs[3], oh=ys[2], ow=ys[3], kh=kh, kw=kw, sh=strides[0],
                                     sw=strides[1], ph=pads[0], pw=pads[1],
                                     count_pad=node.attr_int("count_include_pad", 0),
                                     in_zp=int8_zero_point(in_grid), out_zp=int8_zero_point(out_grid))
    if node.op == "MaxPool":
        if in_grid != out_grid:
            raise CodegenError(f"node '{node.name}' (MaxPool): input and output grids differ")
        low.call(node, f"hw_maxpool({low.params('hw_pool_params', fields)}, {low.ptr(x)}, {low.ptr(y)});")
        return
    if low.requantize == "onnxruntime":
        si, so = np.float32(in_grid[0]), np.float32(out_grid[0])
        # MLAS's GlobalAveragePool scale: in_scale / (out_scale * count), in float32
        fields["global"] = int(node.op == "GlobalAveragePool")
        fields.update(in_scale=_float(si), out_scale=_float(so),
                      global_scale=_float(np.float32(si / np.float32(so * np.float32(kh * kw)))))
        low.call(node, f"hw_avgpool_float({low.params('hw_pool_params', fields)}, {low.ptr(x)}, {low.ptr(y)});")
        return
    mult, shift = quantize_multiplier(float(np.float64(np.float32(in_grid[0])) / np.float64(np.float32(out_grid[0]))))
    if 31 - shift + math.log2(kh * kw) + 3 > 62:
        raise CodegenError(f"node '{node.name}' ({node.op}): the window is too large for the int64 average")
    fields.update(mult=mult, shift=shift)
    low.call(node, f"hw_avgpool({low.params('hw_pool_params', fields)}, {low.ptr(x)}, {low.ptr(y)});")


@lowers("Add")
def add(low: Lowering, node: Node) -> None:
    """Add of two run-time int8 tensors (numpy broadcasting up to 4-D): TFLite's integer scheme,
    or with `requantize` "onnxruntime" its QLinearAdd's float rounding (`hw_add_float`)."""
    a, b, y = node.operand(0), node.operand(1), node.outputs[0]
    if a.const is not None or b.const is not None:
        raise CodegenError(f"node '{node.name}' (Add): adding a constant is not supported (fold it into a layer)")
    ys = shape_of(node, y)
    if len(ys) > 4:
        raise CodegenError(f"node '{node.name}' (Add): more than 4 dimensions")
    dims = (1,) * (4 - len(ys)) + tuple(ys)
    ga, gb, gy = low.grid(node, a), low.grid(node, b), low.grid(node, y)
    stride_a = _strides(node, shape_of(node, a), dims)
    stride_b = _strides(node, shape_of(node, b), dims)
    fields: dict[str, object] = dict(dims=_braces(dims), stride_a=_braces(stride_a), stride_b=_braces(stride_b))
    if low.requantize == "onnxruntime":
        ratio_a, ratio_b, fixed = qlinear_add_constants(ga, gb, gy)
        # MLAS's scalar case: one input is a single value along the innermost run it adds.
        scalar = 1 if stride_a[3] == 0 and dims[3] > 1 else 2 if stride_b[3] == 0 and dims[3] > 1 else 0
        fields.update(ratio_a=_float(ratio_a), ratio_b=_float(ratio_b), fixed=_float(fixed), scalar=scalar)
        kernel = "hw_add_float"
    else:
        twice = 2 * max(np.float64(np.float32(ga[0])), np.float64(np.float32(gb[0])))
        am, ash = quantize_multiplier(float(np.float32(ga[0]) / twice))
        bm, bsh = quantize_multiplier(float(np.float32(gb[0]) / twice))
        om, osh = quantize_multiplier(float(twice / ((1 << 20) * np.float64(np.float32(gy[0])))))
        fields.update(a_zp=int8_zero_point(ga), b_zp=int8_zero_point(gb), out_zp=int8_zero_point(gy), a_mult=am,
                      a_shift=ash, b_mult=bm, b_shift=bsh, out_mult=om, out_shift=osh)
        kernel = "hw_add"
    _, lo, hi = low.activation_range(node, y)
    fields.update(act_min=lo, act_max=hi)
    low.call(node, f"{kernel}({low.params('hw_add_params', fields)}, {low.ptr(a)}, {low.ptr(b)}, {low.ptr(y)});")


def qlinear_add_constants(ga: Grid, gb: Grid, gy: Grid) -> tuple[np.float32, np.float32, np.float32]:
    """MLAS's QLinearAdd constants for uint8 grids a + b -> y: scale_a / scale_y and
    scale_b / scale_y in float32, and zp_y - (ratio_a * zp_a + ratio_b * zp_b) with the
    compiler's fused multiply-add (checked bit-equal against onnxruntime in the tests)."""
    sa, sb, sy = (np.float32(g[0]) for g in (ga, gb, gy))
    ratio_a, ratio_b = np.float32(sa / sy), np.float32(sb / sy)
    inner = fma_float32(ratio_a, np.float32(ga[1]), np.float32(ratio_b * np.float32(gb[1])))
    return ratio_a, ratio_b, np.float32(np.float32(gy[1]) - inner)


def fma_float32(x: np.float32, y: np.float32, z: np.float32) -> np.float32:
    """x * y + z rounded once to float32 (round half to even), computed exactly."""
    exact = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
    near = np.float32(float(exact))  # within one float32 step of the exact value
    candidates = (np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf)))
    best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(c.view(np.uint32)) & 1))
    return np.float32(best)


def _float(v: np.float32) -> str:
    """A C float literal that is exactly v (hexadecimal, C99)."""
    return float(v).hex() + "f"


def _strides(node: Node, shape: tuple[int, ...], dims: tuple[int, ...]) -> list[int]:
    full = (1,) * (4 - len(shape)) + tuple(shape)
    strides, step = [0] * 4, 1
    for i in range(3, -1, -1):
        if full[i] == dims[i]:
            strides[i] = step if dims[i] > 1 else 0
        elif full[i] != 1:
            raise CodegenError(f"node '{node.name}' (Add): shapes do not broadcast")
        step *= full[i]
    return strides


def _braces(values: tuple[int, ...] | list[int]) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"


def unary(low: Lowering, node: Node, x: Value, y: Value, lo: int, hi: int, count: int | None = None,
          src: str | None = None, dst: str | None = None) -> None:
    """y = x moved onto y's grid and clamped to [lo, hi] (nothing when the producer did it)."""
    gx, gy = low.grid(node, x), low.grid(node, y)
    same = gx == gy
    if same and src is None and low.same_buffer(x, y):
        done = low.clamped.get(x.name)
        if done is not None and done[0] >= lo and done[1] <= hi:
            low.clamped[y.name] = done
            return
    n = count if count is not None else math.prod(shape_of(node, y))
    fields: dict[str, object] = dict(n=n, in_zp=int8_zero_point(gx), out_zp=int8_zero_point(gy))
    if low.requantize == "onnxruntime":  # as its DequantizeLinear -> QuantizeLinear
        fields.update(in_scale=_float(np.float32(gx[0])), out_scale=_float(np.float32(gy[0])))
    else:
        fields["mult"], fields["shift"] = (0, 0) if same else quantize_multiplier(
            float(np.float64(np.float32(gx[0])) / np.float64(np.float32(gy[0]))))
    fields.update(same_grid=int(same), act_min=lo, act_max=hi)
    kernel = "hw_unary_float" if low.requantize == "onnxruntime" else "hw_unary"
    low.call(node, f"{kernel}({low.params('hw_unary_params', fields)}, {src or low.ptr(x)}, {dst or low.ptr(y)});")
    low.clamped[y.name] = (lo, hi)


@lowers("Relu", "Clip")
def activation(low: Lowering, node: Node) -> None:
    """Relu and Clip: clamps on the output grid (nothing more when the producer clamped)."""
    y = node.outputs[0]
    unary(low, node, node.operand(0), y, *clamp_range(node, low.grid(node, y)))


_TABULATED: dict[str, Callable[[Node, np.ndarray], np.ndarray]] = {
    # In float32, as onnxruntime's CPU kernels compute them between DequantizeLinear and QuantizeLinear.
    "HardSwish": lambda n, x: x * np.clip(x * np.float32(1 / 6) + np.float32(0.5), 0, 1),
    "HardSigmoid": lambda n, x: np.clip(x * np.float32(n.attr_float("alpha", 0.2))
                                        + np.float32(n.attr_float("beta", 0.5)), 0, 1),
    "Sigmoid": lambda n, x: np.float32(1) / (np.float32(1) + np.exp(-x)),
    "Tanh": lambda n, x: np.tanh(x),
}


@lowers(*_TABULATED)
def tabulated(low: Lowering, node: Node) -> None:
    """HardSwish, HardSigmoid, Sigmoid, Tanh: each of the 256 int8 inputs dequantized, the function
    in float32, quantized onto the output grid (rounded half to even), as a table in flash."""
    x, y = node.operand(0), node.outputs[0]
    gx, gy = low.grid(node, x), low.grid(node, y)
    q = np.arange(-128, 128, dtype=np.int32)
    xf = (q - int8_zero_point(gx)).astype(np.float32) * np.float32(gx[0])
    yf = _TABULATED[node.op](node, xf).astype(np.float32)
    table = np.clip(np.rint(yf / np.float32(gy[0])) + int8_zero_point(gy), -128, 127).astype(np.int32)
    name = low.array("table", "int8_t", table)
    low.call(node, f"hw_lut({name}, {low.ptr(x)}, {low.ptr(y)}, {math.prod(shape_of(node, x))});")
    low.clamped[y.name] = (int(table.min()), int(table.max()))


@lowers(*VIEWS)
def view(low: Lowering, node: Node) -> None:
    """Reshape, Flatten, ...: the same bytes under another shape (the plan aliases them)."""
    x, y = node.operand(0), node.outputs[0]
    if low.grid(node, x) != low.grid(node, y):  # onto the reader's grid, in place when x has no other reader
        if low.same_buffer(x, y) and len(x.uses) > 1:
            raise CodegenError(f"node '{node.name}' ({node.op}): input and output grids differ and the input "
                               "has other readers")
        unary(low, node, x, y, -128, 127)
        return
    if not low.same_buffer(x, y):
        low.call(node, f"hw_copy({low.ptr(y)}, {low.ptr(x)}, {math.prod(shape_of(node, y))});")
    low.clamped[y.name] = low.clamped.get(x.name, (-128, 127))


@lowers("Concat")
def concat(low: Lowering, node: Node) -> None:
    """Concat: each input moved onto the output grid, block by block."""
    y = node.outputs[0]
    ys = shape_of(node, y)
    axis = node.attr_int("axis", 0) % len(ys)
    outer, offset = math.prod(ys[:axis]), 0
    total = math.prod(ys[axis:])
    for x in node.inputs:
        if x is None or x.const is not None:
            raise CodegenError(f"node '{node.name}' (Concat): constant inputs are not supported")
        inner = math.prod(shape_of(node, x)[axis:])
        for o in range(outer):
            unary(low, node, x, y, -128, 127, inner, src=f"{low.ptr(x)} + {o * inner}",
                  dst=f"{low.ptr(y)} + {o * total + offset}")
        offset += inner


@lowers("Softmax")
def softmax(low: Lowering, node: Node) -> None:
    """Softmax over the last axis, in float (expf), quantized to the output grid."""
    x, y = node.operand(0), node.outputs[0]
    xs = shape_of(node, x)
    if node.attr_int("axis", -1) % len(xs) != len(xs) - 1:
        raise CodegenError(f"node '{node.name}' (Softmax): only over the last axis")
    gx, gy = low.grid(node, x), low.grid(node, y)
    p = low.params("hw_softmax_params", dict(
        rows=math.prod(xs[:-1]), cols=xs[-1], in_scale=f"{float(np.float32(gx[0]))!r}f",
        out_scale=f"{float(np.float32(gy[0]))!r}f", in_zp=int8_zero_point(gx), out_zp=int8_zero_point(gy)))
    low.call(node, f"hw_softmax({p}, {low.ptr(x)}, {low.ptr(y)});")
