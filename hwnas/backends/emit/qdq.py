"""Emit a graph with quantization annotations (the `quantize` pass's QuantSpec) as ONNX QDQ.

The quantization grid is defined here once and shared with the PyTorch emission
(`weight_scales`, `fake_quant_weight`, `fake_quant_bias`), so QAT in PyTorch and the
exported model compute the same numbers.

- Weights: symmetric per output channel, integers in [-(2^(b-1)-1), 2^(b-1)-1].
- Data inputs: asymmetric per tensor, integers in [0, 2^b-1], scale and zero point
  from calibration.

How each width is emitted:

- 8 bits: real QDQ. uint8 QuantizeLinear/DequantizeLinear on the data input, int8
  weights with a per-channel (axis) DequantizeLinear, and for Conv/Gemm with both 8-bit
  an int32 bias DequantizeLinear (scale a_scale * w_scale), the layout onnxruntime fuses
  into QLinearConv (when the Conv's output reaches a quantized node's Q, possibly
  through Relu), QGemm and MatMulIntegerToFloat.
- Narrower weights (2 to 7 bits): the b-bit grid's integers stored in int8 with the same
  per-channel DequantizeLinear, exact; with 8-bit data inputs onnxruntime runs them on its
  int8 kernels too. (int4 Q/DQ of opset 21 is not used: onnxruntime 1.32 dequantizes it to
  float, and with graph optimizations on it refuses uint4 activations or computes wrong
  outputs.)
- Narrower data inputs (2 to 7 bits): exact fake-quant, Mul(1/scale), Round, Clip,
  Mul(scale), the same arithmetic as torch.fake_quantize_per_tensor_affine.
- 16 bits: fake-quant, weights stored as floats on the 16-bit grid.
- Outputs: a node with 8-bit data and a calibrated output grid (`o_scale`) gets a uint8
  Q/DQ on its output, after the Relu or Clip that follows it, unless every reader
  quantizes that tensor itself. onnxruntime needs it to run the node as an integer kernel
  (DQ → Conv → Q); without it, a Conv that feeds MaxPool, Add or Flatten stays float.
- Grids travel through the ops that only move values (`GRID_PRESERVING`: MaxPool,
  Flatten, Reshape, ...): the output of such an op whose input is on a grid gets one Q/DQ
  pair on that grid, read by all its readers (a MaxPool feeding a quantized Conv and a
  residual Add), and a chain of them ending in readers that quantize it on one grid gets
  that grid at its start (GlobalAveragePool → Flatten → Gemm). Both are exact (quantizing
  commutes with moving values), and onnxruntime then runs MaxPool, Add and the pooling on
  integers instead of dequantizing for a float reader.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, overload

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.emit.onnx import to_onnx
from hwnas.errors import UnsupportedModelError
from hwnas.ir.annotations import Granularity, QuantSpec
from hwnas.ir.graph import Graph, Node, Value

if TYPE_CHECKING:
    import torch  # imported where used: the quantize pass needs the grid, not PyTorch

BITS = (2, 3, 4, 5, 6, 7, 8, 16)
MSE_STEPS = 40  # clipping ratios 1.0, 0.98, ... tried by the MSE search


# -- the grid, shared with the PyTorch emission ------------------------------------------

def weight_qmax(bits: int) -> int:
    """The largest weight integer on a symmetric b-bit grid (127 for 8 bits)."""
    return 2 ** (bits - 1) - 1


def activation_qmax(bits: int) -> int:
    """The largest data integer on an asymmetric b-bit grid (255 for 8 bits)."""
    return 2**bits - 1


def weight_axis(node: Node, ndim: int) -> int:
    """The output-channel axis of the node's weight (input 1)."""
    if node.op == "Gemm":
        return 0 if node.attr("transB", 0) else 1
    return 0 if node.op == "Conv" else ndim - 1  # MatMul: [..., K, N]


@overload
def weight_scales(w: np.ndarray, bits: int, method: str = ..., axis: int = ...,
                  per_tensor: bool = ...) -> np.ndarray:
    """numpy weights give numpy scales."""


@overload
def weight_scales(w: torch.Tensor, bits: int, method: str = ..., axis: int = ...,
                  per_tensor: bool = ...) -> torch.Tensor:
    """A tensor gives tensor scales on its device (the QAT path)."""


def weight_scales(w: np.ndarray | torch.Tensor, bits: int, method: str = "minmax", axis: int = 0,
                  per_tensor: bool = False) -> np.ndarray | torch.Tensor:
    """Per-channel scales (float32, one per index of `axis`): max-abs / qmax, or with
    method 'mse' the clipping of max-abs that minimizes each channel's quantization MSE.
    A per-tensor scale is returned repeated per channel. Returns numpy for numpy input."""
    import torch

    t = torch.from_numpy(np.array(w, np.float32)) if isinstance(w, np.ndarray) else w
    with torch.no_grad():
        flat = t.detach().float().movedim(axis, 0).reshape(t.shape[axis], -1)
        if per_tensor:
            flat = flat.reshape(1, -1)
        qmax = weight_qmax(bits)
        amax = flat.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        if method == "mse":
            best, best_err = scale, torch.full_like(scale, float("inf"))
            for i in range(MSE_STEPS):
                s = scale * (1.0 - i / 50)
                q = torch.clamp(torch.round(flat * (1.0 / s)[:, None]), -qmax, qmax) * s[:, None]
                err = ((q - flat) ** 2).sum(dim=1)
                better = err < best_err
                best, best_err = torch.where(better, s, best), torch.where(better, err, best_err)
            scale = best
        if per_tensor:
            scale = scale.expand(t.shape[axis]).contiguous()
    return scale.numpy() if isinstance(w, np.ndarray) else scale


def fake_quant_weight(w: torch.Tensor, q: QuantSpec, axis: int,
                      floor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight on its b-bit grid (straight-through gradient) and its scales, each at
    least `floor` (see `bias_scale_floor`)."""
    import torch

    assert q.w_bits is not None
    s = weight_scales(w, q.w_bits, q.method, axis, q.w_granularity is Granularity.PER_TENSOR)
    if floor is not None:
        s = torch.maximum(s, floor)
    m = weight_qmax(q.w_bits)
    zero = torch.zeros(s.shape, dtype=torch.int32, device=s.device)
    return torch.fake_quantize_per_channel_affine(w, s, zero, axis, -m, m), s


def fake_quant_bias(b: torch.Tensor, a_scale: float, w_scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bias on the int32 grid of scale a_scale * w_scale (how integer kernels add it)."""
    import torch

    s = w_scales * torch.tensor(a_scale, dtype=torch.float32, device=w_scales.device)
    zero = torch.zeros(s.shape, dtype=torch.int32, device=s.device)
    return torch.fake_quantize_per_channel_affine(b, s, zero, 0, -(2**31), 2**31 - 1), s


def quantized_bias(node: Node) -> bool:
    """Conv and Gemm with 8-bit data and weights of 8 bits or fewer carry an int32 bias
    (onnxruntime's integer kernels need it); every other bias stays float."""
    q, b = node.ann.quant, node.input(2)
    # An emitter rule, not an op trait: the ops onnxruntime runs as integer kernels with an int32 bias.
    return (q is not None and q.w_bits is not None and q.w_bits <= 8 and q.a_bits == 8 and q.a_scale is not None
            and node.op in ("Conv", "Gemm") and b is not None and b.const is not None and b.const.ndim == 1)


def bias_scale_floor(node: Node, w: torch.Tensor) -> torch.Tensor | None:
    """Smallest weight scale per channel at which the int32 bias still holds the bias: a
    channel whose weights are all but zero (a BatchNorm with γ ≈ 0 folded in) would
    otherwise get a bias scale so small that bias / scale overflows int32."""
    import torch

    if not quantized_bias(node):
        return None
    q = node.ann.quant
    assert q is not None and q.a_scale is not None
    b = torch.from_numpy(np.abs(np.asarray(node.operand(2).const, np.float64)))
    return (b / (q.a_scale * 2.0**30)).to(dtype=w.dtype, device=w.device)


def activation_qparams(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """Scale (a float32 value) and zero point covering [lo, hi] (widened to hold 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmax = activation_qmax(bits)
    scale = np.float32((hi - lo) / qmax) if hi > lo else np.float32(1.0)
    scale = max(scale, np.float32(1e-12))
    zp = int(np.clip(np.round(-lo / scale), 0, qmax))
    return float(scale), zp


def fake_quant_activation(x: np.ndarray, scale: float, zp: int, bits: int) -> np.ndarray:
    """numpy twin of torch.fake_quantize_per_tensor_affine (multiply by 1/scale, round to even)."""
    s = np.float32(scale)
    k = np.clip(np.round(x.astype(np.float32) * (np.float32(1) / s)), -zp, activation_qmax(bits) - zp)
    return (k * s).astype(np.float32)


# -- emission -----------------------------------------------------------------------------

def to_qdq_onnx(graph: Graph) -> onnx.ModelProto:
    """The graph as ONNX with its quantized nodes in QDQ form (see the module docstring)."""
    quantized = [n for n in graph.nodes if n.ann.quant is not None]
    for n in quantized:
        _check(n)
    model = to_onnx(graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    if opset < 13:  # per-channel DequantizeLinear (axis) needs opset 13
        try:
            model = onnx.version_converter.convert_version(model, 13)
        except Exception:  # onnx's converter raises C++ errors with no common base
            raise UnsupportedModelError(f"graph '{graph.name}': cannot convert opset {opset} to 13 for QDQ") from None
    emitter = _Emitter(model)
    for v, (scale, zero_point) in tensor_grids(graph).items():  # first: readers then quantize what they read
        emitter.output(v, scale, zero_point)
    for n in quantized:
        emitter.quantize(n)
    emitter.finish()
    return model


def output_tensor(node: Node) -> Value | None:
    """The tensor an output grid of the node would apply to: its output, or the output of
    the Relu or Clip that alone reads it (integer kernels fuse those); None for a graph
    output (logits stay float)."""
    graph = node.graph
    if graph is None:
        return None
    v = node.outputs[0]
    users = v.users
    # An emitter rule, not an op trait: the activations onnxruntime fuses into an integer kernel.
    if len(users) == 1 and users[0].op in ("Relu", "Clip") and not users[0].domain \
            and not any(o is v for o in graph.outputs):
        v = users[0].outputs[0]
    return None if any(o is v for o in graph.outputs) else v


def output_point(node: Node) -> Value | None:
    """Where the node's 8-bit output grid applies (`output_tensor`), or None: no grid, or
    every reader is a quantized node that quantizes the tensor as its data input anyway.
    The torch emission fake-quantizes the same tensor."""
    q = node.ann.quant
    if q is None or q.o_scale is None:
        return None
    v = output_tensor(node)
    if v is None:
        return None
    readers = v.uses
    if readers and all(i == 0 and u.ann.quant is not None and u.ann.quant.a_bits for u, i in readers):
        return None
    return v


GRID_PRESERVING = frozenset({"MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity"})
"""Ops whose output values are some of their input values: a tensor on a grid stays on it.
An emitter rule, not a registry trait: the ops onnxruntime runs on integers between a Q/DQ
pair (other value-preserving ops such as Slice or GlobalMaxPool are not treated alike)."""


def moves_values(node: Node) -> bool:
    """True for a GRID_PRESERVING op of the default domain with a data input."""
    return node.op in GRID_PRESERVING and not node.domain and node.input(0) is not None


def tensor_grids(graph: Graph) -> dict[Value, tuple[float, int]]:
    """Every tensor the QDQ emission puts through one uint8 Q/DQ pair read by all its
    readers, with its (scale, zero point), producers first: the nodes' output points
    (`output_point`); the output of a GRID_PRESERVING op whose input is on a grid (the
    same grid); and the input of a chain of such ops, each tensor read once, that ends in
    readers which all quantize it to one 8-bit grid (that grid). All but the first add no
    rounding: the values are already on the grid, or would be after the op."""
    points: dict[int, tuple[float, int]] = {}
    for n in graph.nodes:
        point, q = output_point(n), n.ann.quant
        if point is not None and q is not None and q.o_scale is not None and q.o_zero_point is not None:
            points[id(point)] = (q.o_scale, q.o_zero_point)
    seeds = {}
    for n in graph.nodes:
        if moves_values(n) and id(x := n.operand(0)) not in points and x.producer is not None \
                and len(x.uses) == 1 and not _is_output(graph, x):
            grid = _reader_grid(graph, n.outputs[0], points)
            if grid is not None:
                seeds[id(x)] = grid
    grids: dict[Value, tuple[float, int]] = {}
    known: dict[int, tuple[float, int]] = {}
    for n in graph.nodes:
        for v in n.outputs:
            grid = points.get(id(v))
            if grid is None and moves_values(n) and v is n.outputs[0] and v.uses and not _is_output(graph, v):
                grid = known.get(id(n.operand(0)))
            grid = grid or seeds.get(id(v))
            if grid is not None:
                grids[v], known[id(v)] = grid, grid
    return grids


def _reader_grid(graph: Graph, v: Value, points: dict[int, tuple[float, int]]) -> tuple[float, int] | None:
    """The 8-bit grid every reader of v (through GRID_PRESERVING ops read once) quantizes
    it to, or None: a float reader, readers on different grids, or a grid on the way."""
    if id(v) in points or _is_output(graph, v) or not v.uses:
        return None
    found = set()
    for u, i in v.uses:
        q = u.ann.quant
        if i == 0 and q is not None and q.a_bits == 8 and q.a_scale is not None and q.a_zero_point is not None:
            found.add((q.a_scale, q.a_zero_point))
        elif i == 0 and moves_values(u) and len(v.uses) == 1 and (g := _reader_grid(graph, u.outputs[0], points)):
            found.add(g)
        else:
            return None
    return found.pop() if len(found) == 1 else None


def _is_output(graph: Graph, v: Value) -> bool:
    return any(o is v for o in graph.outputs)


def _check(n: Node) -> None:
    q = n.ann.quant
    assert q is not None
    for kind, bits in (("w_bits", q.w_bits), ("a_bits", q.a_bits)):
        if bits is not None and bits not in BITS:
            raise UnsupportedModelError(f"node '{n.name}' ({n.op}): {kind}={bits} is not one of 2..8, 16")
    w = n.input(1)
    # An emitter rule, not the has-weights trait: the float layers whose weight axis
    # `weight_axis` knows (ConvTranspose and the integer ops have weights too).
    if q.w_bits and (n.op not in ("Conv", "Gemm", "MatMul") or w is None or w.const is None):
        raise UnsupportedModelError(f"node '{n.name}' ({n.op}): w_bits is set but input 1 is not a constant weight")
    if q.a_bits and (q.a_scale is None or q.a_zero_point is None):
        raise UnsupportedModelError(f"node '{n.name}' ({n.op}): a_bits={q.a_bits} has no calibrated scale "
                                    "(run the quantize pass)")


class _Emitter:
    """Rewrites the float ONNX model in place: nodes are inserted before their reader."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.g = model.graph
        self.protos = {p.name: p for p in self.g.node}
        self.names = {n for p in self.g.node for n in (*p.output, p.name)}
        self.names |= {t.name for t in self.g.initializer} | {i.name for i in self.g.input}
        self.before: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.inits: list[TensorProto] = []
        self.shared: dict[tuple, str] = {}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        # Scales and zero points stay scalars (np.ascontiguousarray would make them 1-D, and
        # onnxruntime then keeps the Clip before a QuantizeLinear, and the Conv in float).
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def node(self, reader: str, op: str, inputs: list[str], base: str, **attrs: object) -> str:
        out = self.fresh(base)
        proto = helper.make_node(op, inputs, [out], name=self.fresh(f"{base}_{op}"))
        proto.attribute.extend(helper.make_attribute(k, v) for k, v in sorted(attrs.items()))
        self.before[reader].append(proto)
        return out

    def quantize(self, n: Node) -> None:
        import torch

        q = n.ann.quant
        assert q is not None
        p = self.protos[n.name]
        if q.a_bits:
            p.input[0] = self.activation(n.name, p.input[0], q)
        if q.w_bits:
            w = torch.from_numpy(np.array(n.operand(1).const, np.float32))
            axis = weight_axis(n, w.dim())
            fq, s = fake_quant_weight(w, q, axis, bias_scale_floor(n, w))
            if q.w_bits <= 8:
                shape = [1] * w.dim()
                shape[axis] = -1
                ints = torch.round(fq / s.reshape(shape)).numpy().astype(np.int8)
                wq = self.const(p.input[1] + "_q", ints)
                ws = self.const(p.input[1] + "_scale", s.numpy())
                wz = self.const(p.input[1] + "_zp", np.zeros(s.shape, np.int8))
                p.input[1] = self.node(n.name, "DequantizeLinear", [wq, ws, wz], p.input[1] + "_dq", axis=axis)
            else:
                p.input[1] = self.const(p.input[1] + "_fq", fq.numpy())
            if quantized_bias(n):
                assert q.a_scale is not None
                b = torch.from_numpy(np.array(n.operand(2).const, np.float32))
                fb, sb = fake_quant_bias(b, q.a_scale, s)
                bq = self.const(p.input[2] + "_q", torch.round(fb / sb).numpy().astype(np.int32))
                bs = self.const(p.input[2] + "_scale", sb.numpy())
                bz = self.const(p.input[2] + "_zp", np.zeros(sb.shape, np.int32))
                p.input[2] = self.node(n.name, "DequantizeLinear", [bq, bs, bz], p.input[2] + "_dq", axis=0)

    def activation(self, reader: str, x: str, q: QuantSpec) -> str:
        """The name of x on q's grid; readers with the same grid share the nodes."""
        assert q.a_bits is not None and q.a_scale is not None and q.a_zero_point is not None
        key = (x, q.a_bits, q.a_scale, q.a_zero_point)
        if key in self.shared:
            return self.shared[key]
        s = np.float32(q.a_scale)
        if q.a_bits == 8:
            out = self.qdq(reader, x, q.a_scale, q.a_zero_point)
        else:
            inv = self.const(x + "_inv_scale", np.array(np.float32(1) / s))
            lo = self.const(x + "_qlo", np.array(-q.a_zero_point, np.float32))
            hi = self.const(x + "_qhi", np.array(activation_qmax(q.a_bits) - q.a_zero_point, np.float32))
            k = self.node(reader, "Mul", [x, inv], x + "_div")
            k = self.node(reader, "Round", [k], x + "_round")
            k = self.node(reader, "Clip", [k, lo, hi], x + "_clip")
            out = self.node(reader, "Mul", [k, self.const(x + "_scale", np.array(s))], x + "_fq")
        self.shared[key] = out
        return out

    def qdq(self, reader: str, x: str, scale: float, zero_point: int) -> str:
        """x through a uint8 QuantizeLinear/DequantizeLinear pair inserted before `reader`."""
        s = self.const(x + "_scale", np.array(np.float32(scale)))
        zp = self.const(x + "_zp", np.array(zero_point, np.uint8))
        xq = self.node(reader, "QuantizeLinear", [x, s, zp], x + "_q")
        return self.node(reader, "DequantizeLinear", [xq, s, zp], x + "_dq")

    def output(self, v: Value, scale: float, zero_point: int) -> None:
        """Every reader of v reads it through one Q/DQ pair on the grid (scale, zero_point),
        inserted before the first reader; a reader quantizing v to the same grid uses it."""
        readers = [p for p in self.g.node if v.name in p.input]
        if not readers:
            return
        out = self.qdq(readers[0].name, v.name, scale, zero_point)
        for p in readers:
            for i, name in enumerate(p.input):
                if name == v.name:
                    p.input[i] = out
        self.shared[(v.name, 8, scale, zero_point)] = self.shared[(out, 8, scale, zero_point)] = out

    def finish(self) -> None:
        nodes = [m for p in self.g.node for m in (*self.before.get(p.name, ()), p)]
        self.g.ClearField("node")
        self.g.node.extend(nodes)
        self.g.initializer.extend(self.inits)
        used = {i for p in self.g.node for i in p.input} | {o.name for o in self.g.output}
        kept = [t for t in self.g.initializer if t.name in used]
        self.g.ClearField("initializer")
        self.g.initializer.extend(kept)
