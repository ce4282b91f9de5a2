"""QDQ folding: a QDQ model's QuantizeLinear/DequantizeLinear nodes become quantization annotations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from hwnas.backends.emit.qdq import output_tensor, tensor_grids
from hwnas.ir.annotations import Granularity, QuantSpec
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.types import DType
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.quantize import LAYER_OPS, integer_adds

Grid = tuple[float, int]
"""(scale, zero point) of an 8-bit activation grid, the zero point on the uint8 range."""
WEIGHT_TYPES = (np.int8, np.uint8)


@register_pass
@dataclass(frozen=True)
class FoldQdq(Pass):
    """Turns the Q/DQ of a QDQ model (one hwnas wrote, or onnxruntime's `quantize_static`)
    into the `quant` annotations the `quantize` pass records, as onnxruntime reads
    DQ → op → Q as an integer kernel: an int8/uint8 weight's DequantizeLinear into a Conv,
    Gemm or MatMul becomes the float constant it computes (w_bits from the integers' range;
    an int32 bias's likewise), a uint8/int8 QuantizeLinear → DequantizeLinear pair on a
    tensor becomes the grid of the layers that read it (a_scale) or write it (o_scale, after
    the Relu/Clip they fuse; residual Adds too). A pair is folded only where the annotations
    give it back when emitted (`tensor_grids`, or readers that quantize the tensor to that
    grid themselves); others (a graph output's, a float reader's) stay and are priced as the
    nodes they are. Exact as emitted: `emit_onnx` writes the Q/DQ again (the float emission
    drops their rounding, as for any quantized graph)."""

    name = "fold-qdq"

    def run(self, graph: Graph) -> PassResult:
        pairs = {y.name: grid for y, grid in _pairs(graph)}
        weights = [n.name for n in graph.nodes if weight_skip_reason(n) is None]
        if not pairs and not weights:
            return PassResult(graph, False)
        kept: set[str] = set()
        while True:  # a pair the annotations do not give back stays; that can only undo others
            trial = graph.copy()
            folded = {k: g for k, g in pairs.items() if k not in kept}
            _fold(trial, folded, weights)
            lost = _not_given_back(trial, folded)
            if not lost:
                break
            kept |= lost
        if not folded and not weights:
            return PassResult(graph, False)
        _fold(graph, folded, weights)
        return PassResult(graph, True)


def pair_skip_reason(q: Node) -> str | None:
    """Why the QuantizeLinear Q and the DequantizeLinear nodes reading it are not one
    foldable 8-bit pair on Q's input, or None when they are (the annotations may still not
    give it back: then `fold-qdq` keeps it)."""
    y, grid = q.input(0), _grid(q)
    if y is None or grid is None:
        return "its scale and zero point are not a constant per-tensor uint8/int8 grid"
    graph = q.graph
    outputs = {id(v) for v in graph.outputs} if graph is not None else set()
    if id(y) in outputs or y.is_constant:
        return "its input is a graph output or a constant"
    for u, _ in y.uses:
        if u.op != "QuantizeLinear" or u.domain or _grid(u) != grid:
            return f"its input is also read by {u.op} '{u.name}'"
    for p in y.users:
        out = p.outputs[0]
        if not out.uses or id(out) in outputs:
            return "its quantized tensor is a graph output or unread"
        for d, _ in out.uses:
            if d.op != "DequantizeLinear" or d.domain or _grid(d) != grid:
                return f"its quantized tensor is read by {d.op} '{d.name}', not a DequantizeLinear on its grid"
            if id(d.outputs[0]) in outputs:
                return "its DequantizeLinear gives a graph output"
    return None


def weight_skip_reason(dq: Node) -> str | None:
    """Why this node is not a weight's (input 1 of a Conv, Gemm or MatMul with a float data
    input) or a bias's (input 2 of a Conv or Gemm whose weight folds) constant int8/uint8
    (bias: int32) DequantizeLinear that `fold-qdq` folds, or None when it is."""
    if dq.op != "DequantizeLinear" or dq.domain:
        return f"{dq.op} is not a DequantizeLinear"
    x, scale, zp = dq.input(0), dq.input(1), dq.input(2)
    if x is None or x.const is None or scale is None or scale.const is None or (zp is not None and zp.const is None):
        return "its integers, scale or zero point are not constants"
    if "block_size" in dq.attrs and dq.attr_int("block_size", 0):
        return "it dequantizes by blocks"
    if dq.graph is not None and dq.graph.is_output(dq.outputs[0]):
        return "its output is a graph output"
    uses = dq.outputs[0].uses
    if not uses:
        return "nothing reads it"
    for n, i in uses:
        if n.domain or n.op not in LAYER_OPS or i not in (1, 2) or (i == 2 and n.op == "MatMul"):
            return f"{n.op} '{n.name}' reads it as input {i}, not a layer's weight or bias"
        d = n.input(0)
        if d is None or d.is_constant or (d.type is not None and d.type.dtype is not DType.FLOAT):
            return f"layer '{n.name}' has no float run-time data input"
        if i == 1 and x.const.dtype not in WEIGHT_TYPES:
            return f"its integers are {x.const.dtype}, not int8 or uint8"
        if i == 2 and (x.const.dtype != np.int32 or (w := n.input(1)) is None or w.producer is None
                       or weight_skip_reason(w.producer) is not None or w.producer.outputs[0].uses != [(n, 1)]):
            return f"it is not an int32 bias of a layer whose weight folds ('{n.name}')"
    return None


# -- matching --------------------------------------------------------------------------------

def _grid(n: Node) -> Grid | None:
    """The (scale, uint8 zero point) of a per-tensor uint8/int8 Q or DQ, or None."""
    scale, zp = n.input(1), n.input(2)
    if scale is None or scale.const is None or zp is None or zp.const is None or scale.const.size != 1 \
            or zp.const.size != 1 or zp.const.dtype not in WEIGHT_TYPES:
        return None
    offset = 128 if zp.const.dtype == np.int8 else 0  # int8 grids are uint8 grids shifted: the same values
    return float(np.float32(scale.const.reshape(()))), int(zp.const.reshape(())) + offset


def _pairs(graph: Graph) -> list[tuple[Value, Grid]]:
    """Every tensor put through foldable Q/DQ pairs, with its grid."""
    out: dict[int, tuple[Value, Grid]] = {}
    for n in graph.nodes:
        if n.op == "QuantizeLinear" and not n.domain and pair_skip_reason(n) is None:
            y, grid = n.operand(0), _grid(n)
            assert grid is not None
            out[id(y)] = (y, grid)
    return list(out.values())


def _not_given_back(graph: Graph, folded: dict[str, Grid]) -> set[str]:
    """The folded pairs (by tensor name) the emission of GRAPH's annotations would not write
    again: the tensor is not on that grid in `tensor_grids`, and not every reader quantizes
    it to that grid as its data input."""
    implied = {v.name: g for v, g in tensor_grids(graph).items()}
    lost = set()
    values = {v.name: v for v in graph.values()}
    for name, grid in folded.items():
        if name in implied:
            if implied[name] != grid:
                lost.add(name)
            continue
        for u, i in values[name].uses:
            q = u.ann.quant
            if i != 0 or q is None or q.a_bits != 8 or (q.a_scale, q.a_zero_point) != grid:
                lost.add(name)
                break
    return lost


# -- rewriting -------------------------------------------------------------------------------

@dataclass
class _Weight:
    bits: int
    granularity: Granularity
    symmetric: bool
    nodes: list[Node] = field(default_factory=list)


def _fold(graph: Graph, pairs: dict[str, Grid], weights: Iterable[str]) -> None:
    """Fold the named weight DQs and the pairs on the named tensors, then annotate."""
    layers: dict[str, _Weight] = {}
    for name in weights:
        dq = graph.node_by_name(name)
        x = _array(dq.input(0))
        value = _dequantize(dq)
        ints = dq.operand(0).name
        # The weight's own name where the file kept it (hwnas writes W as W_q, onnxruntime as W_quantized).
        c = graph.add_constant(value, ints.removesuffix("_quantized").removesuffix("_q") or ints)
        for n, i in dq.outputs[0].uses:
            if i == 1:
                layers[n.name] = _weight_kind(dq, x)
        _bypass(graph, dq, c)
    grids: dict[int, Grid] = {}
    for name, grid in pairs.items():
        y = graph.value_by_name(name)
        for q in y.users:
            for d in q.outputs[0].users:
                _bypass(graph, d, y)
            _bypass(graph, q, None)
        grids[id(y)] = grid
    outputs: dict[str, Value | None] = {}
    for n in graph.nodes:
        if n.op not in LAYER_OPS or n.domain:
            continue
        w, a = layers.get(n.name), grids.get(id(n.operand(0)))
        if w is None and a is None:
            continue
        spec = QuantSpec() if w is None else QuantSpec(w_bits=w.bits, w_granularity=w.granularity,
                                                       symmetric=w.symmetric)
        if a is not None:
            spec = dataclasses.replace(spec, a_bits=8, a_scale=a[0], a_zero_point=a[1])
            out = output_tensor(n) if w is not None else None
            o = grids.get(id(out)) if out is not None else None
            if o is not None:  # the integer kernel writes this grid, after the Relu/Clip it fuses
                spec = dataclasses.replace(spec, o_scale=o[0], o_zero_point=o[1])
                outputs[n.name] = out
        n.ann.quant = spec
    for name, out in integer_adds(graph, outputs).items():
        o = grids.get(id(out))
        if o is not None:
            graph.node_by_name(name).ann.quant = QuantSpec(o_scale=o[0], o_zero_point=o[1])


def _bypass(graph: Graph, node: Node, value: Value | None) -> None:
    """Readers of NODE's output read VALUE instead; NODE and the constants only it read go."""
    if value is not None:
        node.outputs[0].replace_all_uses_with(value)
    inputs = node.inputs
    graph.remove_node(node)
    graph.drop_if_unused(*inputs)


def _dequantize(dq: Node) -> np.ndarray:
    """DequantizeLinear's float32 result on constants, as onnxruntime computes it:
    (x - zero_point) in integers, then times the scale in float32."""
    x, scale = _array(dq.input(0)), _array(dq.input(1)).astype(np.float32)
    zp = dq.input(2)
    zero = _array(zp).astype(np.int32) if zp is not None else np.zeros_like(scale, np.int32)
    if scale.size > 1:
        axis = dq.attr_int("axis", 1) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((x.astype(np.int64) - zero).astype(np.float32) * scale).astype(np.float32)


def _weight_kind(dq: Node, x: np.ndarray) -> _Weight:
    """The width, granularity and symmetry of a weight's integers: the narrowest symmetric
    grid that holds them (hwnas writes 2..7-bit weights as int8), 8 bits when asymmetric."""
    scale = _array(dq.input(1))
    zp = dq.input(2)
    per_tensor = scale.size == 1 or bool(np.all(scale == scale.reshape(-1)[0]))
    granularity = Granularity.PER_TENSOR if per_tensor else Granularity.PER_CHANNEL
    if x.dtype != np.int8 or (zp is not None and zp.const is not None and np.any(zp.const != 0)):
        return _Weight(8, granularity, False)
    top = int(np.abs(x.astype(np.int32)).max()) if x.size else 0
    bits = next((b for b in range(2, 9) if top <= 2 ** (b - 1) - 1), 8)
    return _Weight(bits, granularity, True)


def _array(v: Value | None) -> np.ndarray:
    """The array of a constant `weight_skip_reason` checked."""
    assert v is not None and v.const is not None
    return v.const
