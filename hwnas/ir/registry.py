"""The op registry: per op type, shape/dtype inference, op counts and op traits.

Entries are registered in `hwnas.ir.ops.*` (one module per op family), next to each other.
`@infer("Conv")` registers shape inference, `@work("Conv")` registers the arithmetic work
(MACs and FLOPs) from which every cost model starts. An op with a `work` entry is priced;
one without is still imported, typed by onnx's own inference, and reported as unpriced.
`declare_traits(OpTraits(...), "Conv")` records what other modules ask about an op (is it a
view, a pool, which inputs are weights, which kernel runs it, how it treats channels): they
call `traits(node)` or `kernel_kind(node)` instead of keeping op-name sets of their own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import defs, shape_inference

from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.types import Dim, DType, TensorType

InferFn = Callable[[Node], list[TensorType | None]]


@dataclass(frozen=True, slots=True)
class Work:
    """Arithmetic of one node: multiply-accumulates and all floating/integer ops."""

    macs: int = 0
    flops: int = 0


WorkFn = Callable[[Node], Work]


@dataclass(frozen=True, slots=True)
class OpCounts:
    """Counts of one node: its arithmetic, its weights (static float tensors) and the bytes
    of all its inputs and outputs."""

    macs: int
    flops: int
    params: int
    param_bytes: int
    bytes_read: int
    bytes_written: int


_INFER: dict[tuple[str, str], InferFn] = {}
_WORK: dict[tuple[str, str], WorkFn] = {}


def _key(op: str) -> tuple[str, str]:
    domain, _, name = op.rpartition("::")
    return (domain, name)


def infer(*ops: str) -> Callable[[InferFn], InferFn]:
    """Registers the decorated function as the shape/dtype inference of `ops`."""

    def deco(fn: InferFn) -> InferFn:
        for op in ops:
            _INFER[_key(op)] = fn
        return fn

    return deco


def work(*ops: str) -> Callable[[WorkFn], WorkFn]:
    """Registers the decorated function as the arithmetic work of `ops` (which prices them)."""

    def deco(fn: WorkFn) -> WorkFn:
        for op in ops:
            _WORK[_key(op)] = fn
        return fn

    return deco


def _load() -> None:
    import hwnas.ir.ops  # noqa: F401  (registers the entries)


def registered_ops() -> set[str]:
    """The priced ops (`domain::op` outside the default domain)."""
    _load()
    return {f"{d}::{o}" if d else o for d, o in _WORK}


def is_priced(node: Node) -> bool:
    """Whether the node's op has a `work` entry."""
    _load()
    return (node.domain, node.op) in _WORK


# -- traits ----------------------------------------------------------------------------

KernelKind = Literal["conv", "depthwise", "gemm", "pool", "elementwise", "movement", "other"]
"""How cost models and latency predictors group kernels."""


class Channels(enum.Enum):
    """What structured pruning may assume about an op's channel axis when the channel
    analysis (`hwnas.passes.channels`) has no rule of the op's own."""

    BLOCKS = "blocks"
    """Nothing: the channels it reads cannot be removed."""
    PER_CHANNEL = "per-channel"
    """Output channel c reads input channel c alone; other inputs are scalars, shapes, or
    one parameter per channel (`OpTraits.channel_params`)."""
    BROADCAST = "broadcast"
    """Element-wise over inputs that broadcast: ties the channels of every input to the output."""
    SHAPE_ONLY = "shape-only"
    """Reads only its input's shape, so removing channels does not concern it."""


@dataclass(frozen=True, slots=True)
class Pool:
    """A pooling op: how it reduces a window, and whether the window is the whole image."""

    reduce: Literal["max", "average", "lp"]
    whole: bool = False


@dataclass(frozen=True, slots=True)
class OpTraits:
    """What the rest of hwnas asks about an op; registered per op with `declare_traits`.
    The defaults describe an op nothing special is known about."""

    view: bool = False
    """A view of its input at run time: no kernel, no copy (Reshape, Identity)."""
    elementwise: bool = False
    """Runs as an element-wise kernel: output element i reads input element i of each
    (broadcast) input, so it may run in place."""
    pool: Pool | None = None
    weight_inputs: tuple[int, ...] = ()
    """Inputs that hold the layer's weights when they are constant (Conv's 1, QLinearConv's 3)."""
    state_inputs: tuple[int, ...] = ()
    """Inputs that hold run-time state, never weights, even when constant (a recurrent layer's
    initial hidden and cell states: zeros sized by the batch, constant once the dims are bound)."""
    kernel: KernelKind | Callable[[Node], KernelKind] = "other"
    """The kernel kind, or a function of the node where it depends on attributes and shapes
    (a convolution with one group per channel is depthwise)."""
    channels: Channels = Channels.BLOCKS
    channel_params: tuple[int, ...] = ()
    """Inputs holding one value per channel (BatchNormalization's scale, bias, mean, var)."""

    @property
    def has_weights(self) -> bool:
        """Whether the op has weight inputs (a layer: Conv, Gemm, MatMul, their integer forms)."""
        return bool(self.weight_inputs)


NO_TRAITS = OpTraits()
"""The traits of an op that declares none."""

_TRAITS: dict[tuple[str, str], OpTraits] = {}


def declare_traits(t: OpTraits, *ops: str) -> OpTraits:
    """Records `t` as the traits of each of `ops` (`domain::op` outside the default domain).
    An op is declared once: a second declaration is a mistake, not an override."""
    for op in ops:
        key = _key(op)
        if key in _TRAITS and _TRAITS[key] != t:
            raise ValueError(f"op '{op}' already has traits {_TRAITS[key]}")
        _TRAITS[key] = t
    return t


def traits_of(op: str) -> OpTraits:
    """The traits of an op by name (`domain::op` outside the default domain); `NO_TRAITS`
    for an op that declares none."""
    _load()
    return _TRAITS.get(_key(op), NO_TRAITS)


def traits(node: Node) -> OpTraits:
    """The traits of the node's op."""
    _load()
    return _TRAITS.get((node.domain, node.op), NO_TRAITS)


def has_traits(op: str) -> bool:
    """Whether the op declares its traits (every priced op does)."""
    _load()
    return _key(op) in _TRAITS


def ops_with(predicate: Callable[[OpTraits], bool]) -> frozenset[str]:
    """Names of the declared ops whose traits satisfy `predicate` (for listings and tests;
    code that has a node asks `traits(node)`)."""
    _load()
    return frozenset(f"{d}::{o}" if d else o for (d, o), t in _TRAITS.items() if predicate(t))


def kernel_kind(node: Node) -> KernelKind:
    """How cost models group the node's kernel: conv, depthwise, gemm, pool, elementwise,
    movement or other."""
    k = traits(node).kernel
    return k if isinstance(k, str) else k(node)


# -- inference -------------------------------------------------------------------------


class InferenceError(ValueError):
    """A node whose inputs do not fit its op (the message names the node and op)."""


def infer_types(node: Node) -> list[TensorType | None]:
    """Output types of `node` from its inputs' types (and constant inputs' values)."""
    _load()
    fn = _INFER.get((node.domain, node.op))
    if fn is not None:
        try:
            out = fn(node)
        except (TypeError, IndexError, ValueError, KeyError, ZeroDivisionError) as e:
            raise InferenceError(f"node '{node.name}' ({node.op}): {e}") from None
        return out + [None] * (len(node.outputs) - len(out))
    return onnx_infer(node)


def onnx_infer(node: Node) -> list[TensorType | None]:
    """Types from onnx's per-node inference (the fallback for ops without their own)."""
    from hwnas.ir.attributes import array_to_tensor, attr_to_onnx

    opset = node.graph.opset if node.graph is not None else {"": 17}
    version = opset.get(node.domain, 1)
    try:
        schema = defs.get_schema(node.op, version, node.domain)
    except defs.SchemaError:
        return [None] * len(node.outputs)
    proto = onnx.helper.make_node(
        node.op, ["" if v is None else f"i{i}" for i, v in enumerate(node.inputs)],
        [f"o{i}" for i in range(len(node.outputs))], domain=node.domain or None,
    )
    proto.attribute.extend(attr_to_onnx(k, a) for k, a in node.attrs.items())
    types, data = {}, {}
    for i, v in enumerate(node.inputs):
        if v is None:
            continue
        if v.type is not None:
            types[f"i{i}"] = v.type.to_onnx()
        c = const_value(v)
        if c is not None and c.size <= 4096:
            data[f"i{i}"] = array_to_tensor(c, f"i{i}")
    ops = [onnx.helper.make_opsetid(d, v) for d, v in opset.items()]
    try:
        out = shape_inference.infer_node_outputs(schema, proto, types, data, opset_imports=ops)
    except Exception as e:  # onnx's C++ errors have no common Python base
        raise InferenceError(f"node '{node.name}' ({node.op}): {str(e).strip().splitlines()[0][:200]}") from None
    return [TensorType.from_onnx(out[f"o{i}"]) if f"o{i}" in out else None for i in range(len(node.outputs))]


def refresh_types(graph: Graph) -> bool:
    """Re-infer every node's output types in order; True when any type changed. Nodes
    whose inference fails keep their types (the verifier reports real inconsistencies).
    A node whose inference reads nothing that changed since the graph's last refresh (see
    `_inference_key`) and whose output types are still the ones that refresh left is skipped:
    its inference would give them again (a pipeline refreshes an unchanged graph often)."""
    from hwnas.ir.ops.tensor import SHAPE_FOLDS

    changed = False
    opset = tuple(graph.opset.items())
    last = graph._type_memo if graph._type_memo_opset == opset else {}
    memo: dict[int, tuple[object, ...]] = {}
    for node in graph.nodes:
        key = _inference_key(node, SHAPE_FOLDS)
        if key is not None and last.get(id(node)) == key:
            memo[id(node)] = key
            continue
        try:
            types = infer_types(node)
        except InferenceError:
            continue
        node_changed = False
        for v, t in zip(node.outputs, types, strict=False):
            if t == v.type:  # the common case: refine would return the same type
                continue
            new = refine(t, v.type)
            if new != v.type:
                v.type = new
                node_changed = changed = True
        if key is not None:
            n = len(node.outputs)
            memo[id(node)] = key[:-n] + tuple(v.type for v in node.outputs) if node_changed and n else key
    graph._type_memo, graph._type_memo_opset = memo, opset
    return changed


def _inference_key(node: Node, shape_folds: Container[str]) -> tuple[object, ...] | None:
    """What `infer_types` reads of the graph for this node, and the output types it leaves:
    the node, its op, attributes, output count, per input the value itself, its type and its
    constant array (by identity: constants are not edited in place), then the outputs' types.
    None when it reads further back (an input computed by a Constant or Shape node, or an
    integer input computed by an op that `shape_value` folds through). One flat tuple: a tuple
    per part would multiply the objects the garbage collector scans."""
    attrs = node.attrs
    key: list[object] = [node, node.op, node.domain, len(node.outputs), len(attrs), len(node._inputs)]
    for item in attrs.items():
        key += item
    for v in node._inputs:
        if v is None:
            key += (None, None, None, None)
            continue
        p = v.producer
        if p is not None and not p.domain and (p.op in ("Constant", "Shape") or (
                p.op in shape_folds and v.type is not None and v.type.dtype in (DType.INT64, DType.INT32))):
            return None
        # The array's id first: keys compare element by element, and arrays compare elementwise.
        key += (v, v.type, id(v.const), v.const)
    key += [v.type for v in node.outputs]
    return tuple(key)


def refine(inferred: TensorType | None, old: TensorType | None) -> TensorType | None:
    """The inferred type, with dims it leaves unknown taken from the old type when the
    two agree otherwise (onnx's whole-model data propagation may know more)."""
    if inferred is None:
        return old
    if old is None or old.dtype != inferred.dtype:
        return inferred
    if inferred.shape is None:
        return old
    if old.shape is None or len(old.shape) != len(inferred.shape):
        return inferred
    dims: list[Dim] = []
    for a, b in zip(inferred.shape, old.shape, strict=True):
        if isinstance(a, int):
            dims.append(a)
        else:
            dims.append(b if b is not None else a)
    return TensorType(inferred.dtype, tuple(dims))



# -- counts ----------------------------------------------------------------------------


def op_counts(node: Node, static: Callable[[Value], bool] | None = None,
              weights: GraphWeights | None = None) -> OpCounts | None:
    """Counts of one node, or None (unpriced) when the op is not in the registry or its inputs'
    types are too unknown to count it.
    `static` answers "known before run time?" (default `is_static`; pass `static_values(graph)`
    when counting a whole graph). Without `weights` the node's params are every weight it
    reads; pass `graph_weights(graph)` when summing over a graph, so that each weight counts
    once (at the node that owns it)."""
    static = static or is_static
    _load()
    fn = _WORK.get((node.domain, node.op))
    if fn is None or _unsized(node):
        return None
    try:
        w = fn(node)
    except (TypeError, IndexError, ValueError, KeyError, ZeroDivisionError):
        return None  # an input without a known type or rank: the node is unpriced, as an unknown op is
    owned = (weights.of(node) if weights is not None
             else tuple(v for v in _weight_candidates(node) if is_weight(v, static)))
    params = sum(_numel(v) for v in owned)
    param_bytes = sum(_nbytes(v) for v in owned)
    return OpCounts(
        macs=w.macs,
        flops=w.flops,
        params=params,
        param_bytes=param_bytes,
        bytes_read=sum(_nbytes(v) for v in node.inputs),
        bytes_written=sum(_nbytes(v) for v in node.outputs),
    )


def _unsized(node: Node) -> bool:
    """An output that is read (or is the graph's) has a size not known as a number (a dim onnx's
    inference named, an unknown rank): what the node does cannot be counted, and counting
    unknown sizes as 0 would price it at nothing."""
    g = node.graph
    return any((v.type is None or v.type.numel() is None) and (v.uses or (g is not None and g.is_output(v)))
               for v in node.outputs)


def _nbytes(v: Value | None) -> int:
    if v is None or v.type is None:
        return 0
    return v.type.nbytes() or 0


def _numel(v: Value | None) -> int:
    if v is None or v.type is None:
        return 0
    return v.type.numel() or 0


# -- weights ---------------------------------------------------------------------------


def _weight_candidates(node: Node) -> list[Value | None]:
    """The node's inputs that may hold weights: all but its op's `state_inputs`."""
    state = traits(node).state_inputs
    return list(node.inputs) if not state else [v for i, v in enumerate(node.inputs) if i not in state]


def is_weight(v: Value | None, static: Callable[[Value], bool] | None = None) -> bool:
    """Whether `v` is a weight: a float tensor of more than one element known before run
    time. Scalars (Clip bounds, a Mul by 0.5) are not weights."""
    return (v is not None and v.type is not None and v.type.dtype.is_float and _numel(v) > 1
            and (static or is_static)(v))


def weight_source(v: Value, static: Callable[[Value], bool] | None = None) -> Value:
    """The tensor a static value is stored as: looks back through compile-time nodes that
    keep their first input's elements (Reshape, Unsqueeze, Identity, Transpose, Cast,
    DequantizeLinear), so that a weight read through them is the same weight."""
    static = static or is_static
    seen: set[int] = set()
    while (p := v.producer) is not None and id(p) not in seen:
        seen.add(id(p))
        x = p.input(0) if p.inputs else None
        if x is None or not all(u is None or static(u) for u in p.inputs) or _numel(x) != _numel(v) or not _numel(v):
            break
        v = x
    return v


@dataclass(frozen=True, slots=True, eq=False)
class GraphWeights:
    """Where each weight of a graph is counted: at the first node, in graph order, that
    reads it at run time (a node with an input not known before run time). A weight read
    by two nodes, or through a Reshape or Identity folded at compile time, counts once."""

    owned: dict[int, tuple[Value, ...]]
    """`id(node)` -> the weights it owns, as the node reads them."""

    def of(self, node: Node) -> tuple[Value, ...]:
        """The weights counted at `node` (empty for most nodes)."""
        return self.owned.get(id(node), ())

    @property
    def params(self) -> int:
        """Elements of every weight of the graph, each counted once."""
        return sum(_numel(v) for vs in self.owned.values() for v in vs)

    @property
    def nbytes(self) -> int:
        """Bytes of every weight of the graph at its element type, each counted once."""
        return sum(_nbytes(v) for vs in self.owned.values() for v in vs)


def graph_weights(graph: Graph, static: Callable[[Value], bool] | None = None) -> GraphWeights:
    """Attributes each weight of `graph` to one node (see `GraphWeights`). Nodes folded at
    compile time own none: the node that reads their result at run time does."""
    static = static or static_values(graph)
    claimed: set[int] = set()
    owned: dict[int, tuple[Value, ...]] = {}
    for node in graph.nodes:
        if all(v is None or static(v) for v in node.inputs):
            continue
        mine = []
        for v in _weight_candidates(node):
            if v is None or not is_weight(v, static):
                continue
            key = id(weight_source(v, static))
            if key not in claimed:
                claimed.add(key)
                mine.append(v)
        if mine:
            owned[id(node)] = tuple(mine)
    return GraphWeights(owned)


NONDETERMINISTIC_OPS = {
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
}


def is_static(v: Value, _memo: dict[int, bool] | None = None) -> bool:
    """True when the value is known before run time: a constant, or computed from
    constants only (the weights of the model-zoo 'light' models are ConstantOfShape)."""
    if v.const is not None:
        return True
    p = v.producer
    if p is None or p.op in NONDETERMINISTIC_OPS or p.domain:
        return False
    memo = {} if _memo is None else _memo
    if id(p) not in memo:
        memo[id(p)] = False  # guards against cycles in malformed graphs
        memo[id(p)] = all(x is None or is_static(x, memo) for x in p.inputs)
    return memo[id(p)]


def static_values(graph: Graph) -> Callable[[Value], bool]:
    """`is_static` for every value of the graph at once, in one pass over its order."""
    static: set[int] = {id(v) for v in graph.inputs if v.const is not None}
    static.update(id(v) for v in graph.constants.values())
    for node in graph.nodes:
        if node.op in NONDETERMINISTIC_OPS or node.domain:
            continue
        if all(v is None or v.const is not None or id(v) in static for v in node.inputs):
            static.update(id(v) for v in node.outputs)
    return lambda v: v.const is not None or id(v) in static


def const_value(v: Value | None) -> np.ndarray | None:
    """The value's array when it is a constant or the output of a Constant node."""
    if v is None:
        return None
    if v.const is not None:
        return v.const
    p = v.producer
    if p is None or p.domain:
        return None
    if p.op == "Constant":
        from hwnas.ir.ops.tensor import constant_node_value

        return constant_node_value(p)
    if p.op == "Shape" and not p.attrs:
        # The shape of a statically shaped tensor is known before run time.
        x = p.input(0)
        if x is not None and x.type is not None and x.type.is_static:
            return np.array(x.type.shape, dtype=np.int64)
    return None
