"""Quantize weight-bearing nodes: choose bit widths and calibrate activation ranges."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hwnas.backends.emit.qdq import (
    BITS,
    GRID_PRESERVING,
    activation_qmax,
    activation_qparams,
    fake_quant_activation,
    output_tensor,
)
from hwnas.errors import PipelineError, first_line
from hwnas.files import read_npz
from hwnas.ir.annotations import QuantSpec
from hwnas.ir.dims import Sizes
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import is_static, static_values
from hwnas.ir.types import DType
from hwnas.passes.base import Pass, PassResult, register_pass

Method = Literal["minmax", "percentile", "mse"]
Calib = str | Path | Mapping[str, np.ndarray]
"""An .npz path, or arrays by input name; empty: random inputs, with a warning."""
KEEP = 1 << 20  # values kept per tensor for percentile and MSE (a random subset beyond)


class QuantizeError(PipelineError, ValueError):
    """Bad calibration data or layer names; the CLI prints it as one line."""


@register_pass
@dataclass(frozen=True)
class Quantize(Pass):
    """Quantizes Conv, Gemm and MatMul nodes whose weight (input 1) is known before run time
    (a constant, or computed from constants only: ConstantOfShape, a Constant node, fp16 +
    Cast, which then becomes a constant of its own): weights symmetric per output channel
    with `w_bits`, the data input asymmetric per tensor with `a_bits`, its range calibrated
    by running the float model in onnxruntime on `calib` (an .npz of inputs; all of them,
    or the first `samples` when that is not 0; 32 random normal ones, with a warning, when
    empty) and chosen by `method`. `layers` (comma-separated node names) restricts it;
    without it, every such layer left in float gets a warning saying why. It records
    QuantSpec annotations; `to_qdq_onnx` and the PyTorch emission apply them, while the
    float emission stays exactly as it was (hence tolerance 0)."""

    name = "quantize"
    w_bits: int = 8
    a_bits: int = 8
    method: Method = "minmax"
    percentile: float = 99.99
    calib: str = ""
    samples: int = 0
    layers: str = ""

    def __post_init__(self) -> None:
        for key in ("w_bits", "a_bits"):
            check_bits(key, getattr(self, key))
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], not {self.percentile}")
        if self.samples < 0:
            raise ValueError(f"samples must be 0 (all) or more, not {self.samples}")

    def run(self, graph: Graph) -> PassResult:
        names = [s.strip() for s in self.layers.split(",") if s.strip()]
        if names:
            static = static_values(graph)
            nodes, materialized = [_layer(graph, s, static) for s in names], False
        else:
            nodes, materialized = prepare_layers(graph, self.name)
        bits = {n.name: (self.w_bits, self.a_bits) for n in nodes}
        changed = quantize_layers(graph, bits, method=self.method, percentile=self.percentile, calib=self.calib,
                                  samples=self.samples) if bits else False
        return PassResult(graph, changed or materialized)


def check_bits(key: str, bits: int | None) -> None:
    """ValueError unless `bits` (named `key` in the message) is a supported width or None."""
    if bits is not None and bits not in BITS:
        raise ValueError(f"{key} must be 2..8 or 16, not {bits}")


LAYER_OPS = ("Conv", "Gemm", "MatMul")
INTEGER_LAYER_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm", "DynamicQuantizeLSTM")
"""Layers a model quantized elsewhere (onnxruntime's quantizers) already runs in integers."""


def quantizable(n: Node) -> bool:
    """True for a Conv, Gemm or MatMul with a constant float weight and a data input that is
    not static: the nodes the quantize passes annotate (`prepare_layers` makes the static
    weights of the others constants first)."""
    w, x = n.input(1), n.input(0)
    return (n.op in LAYER_OPS and not n.domain and w is not None and w.const is not None
            and np.issubdtype(w.const.dtype, np.floating) and x is not None and not x.is_constant
            and (x.type is None or x.type.dtype is DType.FLOAT))


def skip_reason(n: Node, static: Callable[[Value], bool] = is_static) -> str | None:
    """Why the quantize passes leave node N in float, or None when they can quantize it: a
    Conv, Gemm or MatMul whose float weight (input 1) is STATIC (known before run time) and
    whose float32 data input (input 0) is not. For many nodes give `static_values(graph)`."""
    if n.op not in LAYER_OPS or n.domain:
        return f"{n.op} is not a Conv, Gemm or MatMul"
    w, x = n.input(1), n.input(0)
    if x is None or static(x):
        return "its data input (input 0) is a constant (fold-constants computes it)"
    if x.type is not None and x.type.dtype is not DType.FLOAT:
        return (f"its data input is {x.type.dtype.name.lower()}; the QDQ form quantizes float32 models (convert "
                "the model to float32 first)")
    if w is None:
        return "it has no weight (input 1)"
    if not static(w):
        p = w.producer
        where = "a graph input" if p is None else f"computed at run time (by {p.op} '{p.name}')"
        return f"its weight (input 1) is {where}"
    dtype = w.const.dtype if w.const is not None else w.type.dtype.numpy if w.type is not None else None
    if dtype is None or not np.issubdtype(dtype, np.floating):
        return f"its weight is {dtype if dtype is not None else 'of unknown type'}, not float"
    return None


def prepare_layers(graph: Graph, who: str) -> tuple[list[Node], bool]:
    """The layers a quantize pass without a layer list takes: every node `skip_reason`
    accepts, their static weights made constants (`materialize_weights`). Each Conv, Gemm
    or MatMul with a weight that stays float gets a warning, one line naming it and why
    (a MatMul of two run-time tensors has no weight and is not reported). Returns the
    layers and whether the graph changed."""
    static = static_values(graph)
    nodes, skipped = [], {}
    for n in graph.nodes:
        if n.op not in LAYER_OPS or n.domain:
            continue
        why = skip_reason(n, static)
        if why is None:
            nodes.append(n)
        elif n.op != "MatMul" or any(v is not None and static(v) for v in n.inputs):
            skipped[n.name] = (n.op, why)
    changed, failed = materialize_weights(graph, nodes)
    skipped.update({n.name: (n.op, failed[n.name]) for n in nodes if n.name in failed})
    for name, (op, why) in skipped.items():
        warnings.warn(f"{who}: layer '{name}' ({op}) stays float: {why}", stacklevel=3)
    if not nodes and not skipped:
        integer = Counter(n.op for n in graph.nodes if n.op in INTEGER_LAYER_OPS)
        what = (f"its layers are integer already ({', '.join(f'{op} ×{k}' for op, k in sorted(integer.items()))})"
                if integer else "it has no Conv, Gemm or MatMul")
        warnings.warn(f"{who}: nothing to quantize in graph '{graph.name}': {what}", stacklevel=3)
    return [n for n in nodes if n.name not in failed], changed


def materialize_weights(graph: Graph, nodes: Sequence[Node]) -> tuple[bool, dict[str, str]]:
    """Make the static weight (input 1) of each of NODES, a Conv's or Gemm's static bias
    (input 2: integer kernels need it as a constant) and the parameters of a BatchNorm that
    reads its output (to fold into it), a graph constant where it is not one
    (built by ConstantOfShape, a Constant node, fp16 + Cast, ...), computed once in
    onnxruntime; layers sharing a tensor share the constant, and the nodes that built it go
    when nothing else reads them. Exact. Returns whether anything changed and {node name:
    why its weight could not be computed} (a bias that cannot be stays as it was)."""
    static = static_values(graph)
    wanted = [(n, i) for n in nodes for i in ((1, 2) if n.op in ("Conv", "Gemm") else (1,))]
    # A BatchNorm reading a layer folds into it (quantize_layers) only with constant parameters.
    wanted += [(u, i) for n in nodes for u in n.outputs[0].users if u.op == "BatchNormalization" and not u.domain
               for i in range(1, 5)]
    todo = [(n, i) for n, i in wanted if (v := n.input(i)) is not None and v.const is None and static(v)]
    if not todo:
        return False, {}
    from hwnas.passes.fold_constants import evaluate_static

    values = list({id(v): v for n, i in todo if (v := n.input(i)) is not None}.values())
    arrays, failed = evaluate_static(graph, values)
    made: dict[str, Value] = {}
    reasons: dict[str, str] = {}
    for n, i in todo:
        v = n.operand(i)
        if v.name in failed:
            if i == 1 and n in nodes:
                reasons[n.name] = f"its weight '{v.name}' cannot be computed before run time: {failed[v.name]}"
            continue
        if v.name not in made:
            made[v.name] = graph.add_constant(arrays[v.name], f"{v.name}_value")
        n.set_input(i, made[v.name])
    _remove_unread(graph, [v for v in values if v.name in made])
    return bool(made), reasons


def _remove_unread(graph: Graph, values: list[Value]) -> None:
    """Remove the nodes that computed VALUES, and what only they read, once nothing reads them."""
    outputs = {id(v) for v in graph.outputs}
    stack = list(values)
    while stack:
        v = stack.pop()
        p = v.producer
        if p is None or p.graph is not graph or any(o._uses or id(o) in outputs for o in p.outputs):
            graph.drop_if_unused(v)
            continue
        inputs = [x for x in p.inputs if x is not None]
        graph.remove_node(p)
        stack.extend(inputs)


def _layer(graph: Graph, name: str, static: Callable[[Value], bool]) -> Node:
    try:
        n = graph.node_by_name(name)
    except KeyError:
        known = ", ".join(n.name for n in graph.nodes if skip_reason(n, static) is None) or "none"
        raise QuantizeError(f"quantize: no node named '{name}' (quantizable: {known})") from None
    why = skip_reason(n, static)
    if why is not None:
        raise QuantizeError(f"quantize: node '{name}' ({n.op}) cannot be quantized: {why}")
    return n


def quantize_layers(graph: Graph, bits: Mapping[str, tuple[int | None, int | None]], *,
                    method: Method = "minmax", percentile: float = 99.99, calib: Calib = "",
                    samples: int = 0) -> bool:
    """Annotate each named node with (w_bits, a_bits) (None: that part stays float) and the
    data-input range calibrated on `calib` (all its samples, or the first `samples`).
    Returns whether anything changed. The mixed-precision search calls this with per-layer
    widths. A static weight that is not a constant becomes one first (`materialize_weights`).

    BatchNorms after the nodes are folded into them first (exactly, as every quantization
    toolkit does): the weights are then quantized as they run, and onnxruntime can fuse the
    Q/DQ pairs into integer kernels, which a BatchNorm in between would prevent."""
    from hwnas.passes.fold_batchnorm import FoldBatchNorm

    static = static_values(graph)
    nodes = [_layer(graph, name, static) for name in bits]
    materialized, failed = materialize_weights(graph, nodes)
    if failed:
        name, why = next(iter(failed.items()))
        raise QuantizeError(f"quantize: node '{name}' cannot be quantized: {why}")
    folded = FoldBatchNorm().run(graph).changed or materialized
    for w_bits, a_bits in bits.values():
        check_bits("w_bits", w_bits)
        check_bits("a_bits", a_bits)
    activations = {id(v): v for v in (n.operand(0) for n in nodes if bits[n.name][1] is not None)}
    outputs = {n.name: output_tensor(n) for n in nodes if bits[n.name][1] == 8 and bits[n.name][0] is not None}
    adds = integer_adds(graph, outputs)
    activations.update({id(v): v for v in (*outputs.values(), *adds.values()) if v is not None})
    stats = calibrate(graph, list(activations.values()), calib, samples, method != "minmax") if activations else {}
    changed = False
    for n in nodes:
        w_bits, a_bits = bits[n.name]
        spec = QuantSpec(w_bits=w_bits, a_bits=a_bits, method=method)
        if a_bits is not None:
            x = n.operand(0)
            lo, hi = choose_range(stats[x.name], method, a_bits, percentile)
            scale, zp = within_clip(x, *activation_qparams(lo, hi, a_bits), a_bits)
            spec = dataclasses.replace(spec, a_scale=scale, a_zero_point=zp)
        out = outputs.get(n.name)
        if out is not None:  # the 8-bit output grid integer kernels write to
            o_scale, o_zp = within_clip(out, *activation_qparams(*choose_range(stats[out.name], method, 8, percentile),
                                                                   8), 8)
            spec = dataclasses.replace(spec, o_scale=o_scale, o_zero_point=o_zp)
        if n.ann.quant != spec:
            n.ann.quant, changed = spec, True
    for name, out in adds.items():  # an output grid only: both inputs are already on grids
        add = graph.node_by_name(name)
        o_scale, o_zp = within_clip(out, *activation_qparams(*choose_range(stats[out.name], method, 8, percentile),
                                                               8), 8)
        spec = QuantSpec(method=method, o_scale=o_scale, o_zero_point=o_zp)
        if add.ann.quant != spec:
            add.ann.quant, changed = spec, True
    gridded = [*nodes, *(graph.node_by_name(a) for a in adds)]
    return _share_grids(nodes, {**outputs, **adds}, gridded) or changed or folded


def integer_adds(graph: Graph, outputs: Mapping[str, Value | None]) -> dict[str, Value]:
    """Residual Adds whose inputs are both on 8-bit grids (quantized nodes' outputs, or
    Adds already chosen, reached through MaxPool, Flatten, ...): name → the tensor their own
    output grid applies to (after a Relu that follows). With it onnxruntime runs them as
    QLinearAdd, and the residual path stays in integers."""
    on_grid = {id(v) for v in outputs.values() if v is not None}
    chosen: dict[str, Value] = {}
    for n in graph.nodes:
        if n.op != "Add" or n.domain or len(n.inputs) != 2 or any(v is None or v.const is not None for v in n.inputs):
            continue
        if all(v is not None and id(_through_grid_preserving(v)) in on_grid for v in n.inputs):
            out = output_tensor(n)
            if out is not None:
                chosen[n.name] = out
                on_grid.add(id(out))
    return chosen


def _through_grid_preserving(v: Value) -> Value:
    while (p := v.producer) is not None and p.op in GRID_PRESERVING and (x := p.input(0)) is not None:
        v = x
    return v


def within_clip(v: Value, scale: float, zero_point: int, bits: int) -> tuple[float, int]:
    """For a tensor a Clip (ReLU6, say) produced: the scale, lowered by a rounding step where
    needed, so the grid's ends stay inside the Clip's bounds in float32. onnxruntime drops a
    Clip before a QuantizeLinear (and fuses the Conv into an integer kernel) only then;
    6/255 as a float32 times 255 is a hair above 6."""
    p = v.producer
    if p is None or p.op != "Clip" or p.domain:
        return scale, zero_point
    lo_v, hi_v = p.input(1), p.input(2)
    if lo_v is None or lo_v.const is None or hi_v is None or hi_v.const is None:
        return scale, zero_point
    lo, hi = np.float32(lo_v.const), np.float32(hi_v.const)
    s, top = np.float32(scale), activation_qmax(bits) - zero_point
    while s > 0 and (np.float32(top) * s > hi or np.float32(-zero_point) * s < lo):
        s = np.nextafter(s, np.float32(0))
    return float(s), zero_point


def _share_grids(nodes: list[Node], outputs: Mapping[str, Value | None], gridded: list[Node]) -> bool:
    """An 8-bit data input that is another node's output grid (`gridded`: quantized nodes
    and integer Adds), reached only through ops that move values without changing them
    (MaxPool, Flatten, ...), takes that grid: then onnxruntime runs those ops on integers
    and drops the Q/DQ pair between them, instead of requantizing to a grid of its own.
    A tensor on the way may have other readers: the QDQ emission gives it the grid once,
    for all of them (`tensor_grids`)."""
    producer = {id(v): n for n in gridded if (v := outputs.get(n.name)) is not None}
    changed = False
    for n in nodes:
        q = n.ann.quant
        v = n.input(0)
        if q is None or q.a_bits != 8 or v is None:
            continue
        while id(v) not in producer and (p := v.producer) is not None and p.op in GRID_PRESERVING \
                and not p.domain and (x := p.input(0)) is not None:
            v = x
        src = producer.get(id(v))
        if src is None or src is n or src.ann.quant is None:
            continue
        grid = (src.ann.quant.o_scale, src.ann.quant.o_zero_point)
        if grid != (q.a_scale, q.a_zero_point):
            n.ann.quant = dataclasses.replace(q, a_scale=grid[0], a_zero_point=grid[1])
            changed = True
    return changed


# -- calibration ---------------------------------------------------------------------------

@dataclass
class Stats:
    """Running min and max of one tensor over the calibration batches, and a sample of its
    values when a range method needs them (percentile, MSE)."""

    lo: float = np.inf
    hi: float = -np.inf
    kept: list[np.ndarray] = dataclasses.field(default_factory=list)

    def values(self) -> np.ndarray:
        return np.concatenate(self.kept) if self.kept else np.zeros(1, np.float32)


def calibrate(graph: Graph, values: list[Value], calib: Calib, samples: int, keep: bool) -> dict[str, Stats]:
    """Run the float model on the calibration inputs; min, max (and with `keep` a sample of
    the values) of each of `values`."""
    from hwnas.backends.emit.onnx import to_onnx
    from hwnas.backends.sessions import session as ort_session

    data = load_calibration(graph, calib, samples) if _given(calib) else random_inputs(graph, samples)
    model = to_onnx(graph)
    inputs = {v.name for v in graph.inputs}
    fetch = [v.name for v in values if v.name not in inputs]
    outputs = {o.name for o in model.graph.output}
    for v in values:
        if v.name not in inputs and v.name not in outputs:
            vi = model.graph.output.add(name=v.name)
            if v.type is not None:
                vi.type.CopyFrom(v.type.to_onnx())
    source = f"quantize: graph '{graph.name}' (for calibration)"
    session = ort_session(model, optimization="basic", threads=0, error=QuantizeError, source=source)
    stats = {v.name: Stats() for v in values}
    rng = np.random.default_rng(0)
    batches = list(_batches(graph, data))
    for feeds in batches:
        try:
            got = dict(zip(fetch, session.run(fetch, feeds), strict=True)) if fetch else {}
        except Exception as e:  # onnxruntime's run errors (Fail, RuntimeException: allocation) share no base
            raise QuantizeError(f"{source}: onnxruntime cannot run it ({first_line(e)}){ones_hint(graph, calib)}"
                                ) from None
        got.update({k: a for k, a in feeds.items() if k in stats})
        for name, a in got.items():
            st, flat = stats[name], a.reshape(-1).astype(np.float32)
            st.lo, st.hi = min(st.lo, float(flat.min())), max(st.hi, float(flat.max()))
            if keep:
                n = max(1, KEEP // len(batches))
                st.kept.append(flat if flat.size <= n else flat[rng.integers(0, flat.size, n)])
    return stats


def choose_range(st: Stats, method: str, bits: int, percentile: float) -> tuple[float, float]:
    """The clipping range [lo, hi]: the observed extremes, the two-sided percentile of the
    values, or the shrinking of the extremes that minimizes the quantization MSE."""
    if method == "minmax":
        return st.lo, st.hi
    v = st.values()
    if method == "percentile":
        return float(np.percentile(v, 100 - percentile)), float(np.percentile(v, percentile))
    best, best_err = (st.lo, st.hi), np.inf
    for alpha in np.linspace(1.0, 0.05, 60):
        lo, hi = st.lo * alpha, st.hi * alpha
        scale, zp = activation_qparams(lo, hi, bits)
        err = float(np.mean((fake_quant_activation(v, scale, zp, bits) - v) ** 2))
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


RANDOM_SAMPLES = 32
"""Random inputs calibrate when no data is given (and `samples` is 0)."""
LABELS = "labels"
"""The array of a calibration .npz that holds the samples' class labels, not an input."""


RANDOM_DIMS: ContextVar[Sizes | None] = ContextVar("RANDOM_DIMS", default=None)
"""Sizes of symbolic input dims for the random inputs of a calibration that has no data (as
`bind-dims` takes them), while a caller that keeps the graph's dims symbolic sets it: `compile
--dims` (its artifact stays symbolic, its price and random calibration use the sizes)."""


def random_inputs(graph: Graph, samples: int, dims: Sizes | None = None) -> dict[str, np.ndarray]:
    """Standard-normal inputs (0/1 for integer ones) of at least `samples` rows (0:
    RANDOM_SAMPLES), with a warning: the fallback when no calibration data is given. Symbolic
    input dims take their sizes from `dims` (else `RANDOM_DIMS`); those not named there are 1."""
    from hwnas.passes.bind_dims import sized_shape

    samples = samples or RANDOM_SAMPLES
    sizes = dims or RANDOM_DIMS.get() or {}
    warnings.warn(f"quantize: no calibration data for graph '{graph.name}'; activation ranges come from {samples} "
                  "random normal inputs (give calib=FILE.npz or --calib-data)", stacklevel=2)
    rng = np.random.default_rng(0)
    out = {}
    for v in graph.inputs:
        shape = [d if isinstance(d, int) else 1 for d in sized_shape(v.name, v.type.shape, sizes)] \
            if v.type and v.type.shape else [1]
        batch = max(shape[0], 1) if shape else 1
        n = -(-samples // batch) * batch
        dtype = v.type.dtype.numpy if v.type is not None else np.float32
        a = rng.standard_normal((n, *shape[1:])) if np.issubdtype(dtype, np.floating) else \
            rng.integers(0, 2, (n, *shape[1:]))
        out[v.name] = a.astype(dtype)
    return out


def ones_hint(graph: Graph, calib: Calib) -> str:
    """Where random inputs set symbolic dims to 1 (a 1x1 image no detector runs), what to do."""
    from hwnas.passes.bind_dims import sized_shape

    ones: list[str] = []
    if not _given(calib):
        sizes = RANDOM_DIMS.get() or {}
        for v in graph.inputs:
            if v.type is not None and v.type.shape:
                mine: list[str] = []
                sized_shape(v.name, v.type.shape, sizes, 1, mine)
                first = v.type.shape[0]
                if mine and mine[0] == f"{v.name}[{first if first is not None else 'dim 0'}]":
                    mine = mine[1:]  # the leading (batch) dim: the samples are stacked along it
                ones += mine
    if not ones:
        return ""
    return (f"; its random inputs had symbolic dims as 1: {', '.join(ones)}; give calibration data, or the "
            f"dims' sizes before quantizing (--dims NAME=SIZE,... or INPUT=1x3x224x224 on the command line, "
            f"bind-dims{{dims=\"NAME=SIZE,...\"}} in a pipeline)")


def _given(calib: Calib) -> bool:
    return bool(len(calib) if isinstance(calib, Mapping) else str(calib))


def load_calibration(graph: Graph, path: Calib, samples: int = 0) -> dict[str, np.ndarray]:
    """The samples of each input (all of them, or the first `samples` when that is not 0,
    with a warning saying how many of how many) from an .npz named by input (or holding a
    single array for a single-input graph; an array named `labels` is not an input), or
    from such arrays given directly; shapes are checked against the inputs."""
    return calibration_set(graph, path, samples)[0]


def calibration_set(graph: Graph, path: Calib, samples: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """`load_calibration`'s inputs, and the samples' class labels when the data holds an
    array named `labels` (one per sample) that is not a graph input."""
    if isinstance(path, Mapping):
        where, arrays = "calibration data", dict(path)
    else:
        where = f"calibration data '{path}'"
        arrays = read_npz(path, QuantizeError, where)
    labels = arrays.pop(LABELS) if LABELS in arrays and all(v.name != LABELS for v in graph.inputs) else None
    if len(graph.inputs) == 1 and len(arrays) == 1:
        arrays = {graph.inputs[0].name: next(iter(arrays.values()))}
    out: dict[str, np.ndarray] = {}
    count = 0
    for v in graph.inputs:
        if v.name not in arrays:
            raise QuantizeError(f"{where} has no array for input '{v.name}' (arrays: {', '.join(arrays) or 'none'})")
        a, shape = arrays[v.name], v.type.shape if v.type is not None else None
        if shape is not None and (a.ndim != len(shape) or any(
                isinstance(d, int) and d != s for d, s in zip(shape[1:], a.shape[1:], strict=True))):
            need = "(" + ", ".join(["N", *(str(d) if isinstance(d, int) else "?" for d in shape[1:])]) + ")"
            raise QuantizeError(f"{where}: array '{v.name}' has shape {a.shape}, the input needs {need}")
        if out and len(a) != count:
            raise QuantizeError(f"{where}: arrays hold different numbers of samples ({count} and {len(a)})")
        count = len(a)
        out[v.name] = a[:samples or None].astype(v.type.dtype.numpy if v.type is not None else a.dtype)
    if labels is not None and (labels.ndim != 1 or len(labels) != count or not np.issubdtype(labels.dtype, np.integer)):
        raise QuantizeError(f"{where}: array '{LABELS}' must hold one integer class per sample ({count}), "
                            f"not {labels.dtype} of shape {labels.shape}")
    if samples and count > samples:
        warnings.warn(f"{where}: using the first {samples} of its {count} samples (samples={samples}; 0 uses all)",
                      stacklevel=3)
    return out, None if labels is None else labels[:samples or None]


def _batches(graph: Graph, data: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of the input's own batch size (8 at a time when it is symbolic)."""
    first = graph.inputs[0]
    batch = first.shape[0] if first.shape else None
    static = isinstance(batch, int)
    size = batch if isinstance(batch, int) else 8
    n = len(data[first.name])
    if static and n < size:
        raise QuantizeError(f"quantize: input '{first.name}' has batch {size}; calibration needs at least "
                            f"{size} samples, got {n}")
    if static and n % size:
        warnings.warn(f"quantize: calibration uses {n - n % size} of its {n} samples: input '{first.name}' takes "
                      f"batches of {size}", stacklevel=3)
    for i in range(0, n - size + 1 if static else n, size):
        yield {k: a[i : i + size] for k, a in data.items()}
