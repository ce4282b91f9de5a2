"""Constant folding: nodes computed from constants alone become constants, and so do `Shape`
and `Size` of values whose shape is all numbers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from hwnas.backends.sessions import session
from hwnas.errors import HwnasError
from hwnas.ir.attributes import array_to_tensor, attr_to_onnx
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.ops.tensor import constant_node_value
from hwnas.ir.registry import NONDETERMINISTIC_OPS
from hwnas.passes.base import Pass, PassResult, register_pass


def static_shape(node: Node) -> np.ndarray | None:
    """The value of a `Shape` or `Size` node whose input's shape is all numbers (as it is once
    the input dims are bound): its dims (between `start` and `end`, as onnx clamps them) or its
    element count, as int64. None for any other node."""
    if node.domain or node.op not in ("Shape", "Size") or not node.inputs or node.inputs[0] is None:
        return None
    t = node.inputs[0].type
    if t is None or t.shape is None or not t.is_static:
        return None
    dims = [int(d) for d in t.shape if isinstance(d, int)]  # is_static: every dim is one
    if node.op == "Size":
        return np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
    rank = len(dims)

    def clamp(i: object, default: int) -> int:
        k = default if not isinstance(i, int) else i
        return min(max(k + rank if k < 0 else k, 0), rank)

    return np.array(dims[clamp(node.attr("start"), 0):clamp(node.attr("end"), rank)], dtype=np.int64)


def _fold_static_shapes(graph: Graph) -> bool:
    """Every `Shape` and `Size` of a value whose shape is all numbers replaced by a constant, so
    that the shape arithmetic after it folds too (an Expand or Reshape whose target shape is
    computed from the input's then gets a known output shape, and a price). Graph outputs stay."""
    changed = False
    for node in list(graph.nodes):
        value = static_shape(node)
        if value is None or graph.is_output(node.outputs[0]):
            continue
        node.outputs[0].replace_all_uses_with(graph.add_constant(value, f"{node.outputs[0].name}_folded"))
        inputs = node.inputs
        graph.remove_node(node)
        graph.drop_if_unused(*inputs)
        changed = True
    return changed


@register_pass
@dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluates nodes whose inputs are all constants (with onnxruntime, the same kernels
    the model runs on) and replaces their outputs by constants; `Constant` nodes become
    graph constants, and `Shape`/`Size` of a value of numeric shape its dims (`static_shape`).
    It never grows the model: a result larger than both its inputs and
    `max_elements` (ConstantOfShape filling a weight, say) stays a node. Exact."""

    name = "fold-constants"
    max_elements: int = 1024

    def run(self, graph: Graph) -> PassResult:
        changed = _fold_static_shapes(graph)
        ready, planned = self._evaluate_by_level(graph)
        for node in list(graph.nodes) if planned is None else planned:
            if self.skip_reason(node) is not None:
                continue
            got = ready.get(id(node))
            arrays = got[1] if got is not None and got[0] is node else self._evaluate(node)
            if arrays is None:
                continue
            for v, a in zip(node.outputs, arrays, strict=True):
                v.replace_all_uses_with(graph.add_constant(a, f"{v.name}_folded"))
            inputs = node.inputs
            graph.remove_node(node)
            graph.drop_if_unused(*inputs)
            changed = True
        return PassResult(graph, changed)

    def skip_reason(self, node: Node) -> str | None:
        """Why this node is not folded, or None when it is."""
        return self._skip_reason(node, _const_size)

    def _skip_reason(self, node: Node, size: Callable[[Value], int | None]) -> str | None:
        """`skip_reason`, with `size` giving the elements of a value that is (or, for planning,
        will be) a constant and None for any other."""
        if node.domain or node.op in NONDETERMINISTIC_OPS:
            return "op is not a deterministic ONNX op"
        in_size = 0
        for v in node.inputs:
            n = None if v is None else size(v)
            if n is None and v is not None:
                return "an input is not a constant"
            in_size += n or 0
        if node.graph is not None and any(node.graph.is_output(v) for v in node.outputs):
            return "output is a graph output"
        if node.op == "Constant":
            return None
        for v in node.outputs:
            n = v.type.numel() if v.type is not None else None
            if n is None or (n > self.max_elements and n > in_size):
                return f"result of {n if n is not None else 'unknown'} elements would grow the model"
        return None

    def _evaluate_by_level(self, graph: Graph) -> tuple[dict[int, tuple[Node, list[np.ndarray]]], list[Node] | None]:
        """The arrays `_evaluate` would give the nodes `run` folds, by id: one onnxruntime session
        per level of the folding (level 0 reads graph constants only, level k outputs of level k-1)
        instead of one per node. Each node still reads every input as an initializer holding the
        array it would read alone, so its kernel and its result are the same. A level that cannot
        run, or whose results' sizes differ from the types the plan assumed, ends it: the nodes
        left out are evaluated one by one, as before. Second: when every level ran as planned,
        the nodes `run` will fold, in graph order (no other node can fold); else None."""
        level: dict[int, int] = {}  # id(value) -> level of the node computing it (-1: a constant now)
        known: dict[int, int] = {}  # id(value) -> elements, for the values planned to be constants
        plan: list[list[Node]] = []
        order: list[Node] = []

        def size(v: Value) -> int | None:
            return v.const.size if v.const is not None else known.get(id(v))

        for node in graph.nodes:
            if self._skip_reason(node, size) is not None:
                continue
            if node.op == "Constant":
                value = constant_node_value(node)
                if value is not None:
                    known[id(node.outputs[0])], level[id(node.outputs[0])] = value.size, -1
                    order.append(node)
                continue
            k = 1 + max((level.get(id(v), -1) for v in node.inputs if v is not None), default=-1)
            for v in node.outputs:
                n = v.type.numel() if v.type is not None else None
                assert n is not None  # _skip_reason asked for it
                known[id(v)], level[id(v)] = n, k
            plan.extend([] for _ in range(k + 1 - len(plan)))
            plan[k].append(node)
            order.append(node)
        ready: dict[int, tuple[Node, list[np.ndarray]]] = {}
        arrays: dict[int, np.ndarray] = {}  # id(value) -> array, for values computed or Constant-made
        for nodes in plan:
            got = _run_level(graph, nodes, arrays)
            if got is None:
                return ready, None
            exact = True
            for node, outs in zip(nodes, got, strict=True):
                ready[id(node)] = (node, outs)
                for v, a in zip(node.outputs, outs, strict=True):
                    arrays[id(v)] = a
                    exact = exact and a.size == known[id(v)]
            if not exact:
                return ready, None
        return ready, order

    def _evaluate(self, node: Node) -> list[np.ndarray] | None:
        if node.op == "Constant":
            value = constant_node_value(node)
            return None if value is None else [value]
        assert node.graph is not None
        names = [f"in{i}" if v is not None else "" for i, v in enumerate(node.inputs)]
        proto = helper.make_node(node.op, names, [f"out{i}" for i in range(len(node.outputs))])
        proto.attribute.extend(attr_to_onnx(k, a) for k, a in node.attrs.items())
        # skip_reason made sure that every present input is a constant.
        inits = [array_to_tensor(v.const, n) for v, n in zip(node.inputs, names, strict=True)
                 if v is not None and v.const is not None]
        outs = [
            helper.make_tensor_value_info(f"out{i}", int(v.type.dtype) if v.type else 0, None)
            for i, v in enumerate(node.outputs)
        ]
        g = helper.make_graph([proto], "fold", [], outs, initializer=inits)
        opsets = [helper.make_opsetid(d, v) for d, v in node.graph.opset.items()]
        model = helper.make_model(g, opset_imports=opsets)
        model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 8)
        try:
            # One small kernel: thread pools would cost more to start than the work.
            sess = session(model, optimization="disable", threads=1, source=f"node '{node.name}'")
            return list(sess.run(None, {}))
        except HwnasError:
            return None  # onnxruntime cannot load it: leave the node as it is
        except (onnx.onnx_cpp2py_export.checker.ValidationError, RuntimeError, ValueError,
                ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.NotImplemented,
                ort.capi.onnxruntime_pybind11_state.InvalidGraph, ort.capi.onnxruntime_pybind11_state.InvalidArgument):
            return None  # onnxruntime cannot run it: leave the node as it is


def _const_size(v: Value) -> int | None:
    return None if v.const is None else v.const.size


def _input_array(v: Value, computed: dict[int, np.ndarray]) -> np.ndarray | None:
    """The array a node being folded reads for `v`: a graph constant, an array of `computed`
    (by value id) or a Constant node's value."""
    a = v.const if v.const is not None else computed.get(id(v))
    if a is None and v.producer is not None and v.producer.op == "Constant":
        a = constant_node_value(v.producer)
    return a


def _fill(node: Node, computed: dict[int, np.ndarray]) -> np.ndarray | None:
    """A ConstantOfShape's result without a session, or None when it is not plainly one (a
    shape that is not a list of sizes, a `value` that is not one element): its kernel
    writes the one element of `value` (float32 zero without one) at every index, as this does.
    Weight-building models fold hundreds of them, and a session costs more than all."""
    x = node.input(0)
    shape = None if x is None else _input_array(x, computed)
    a = node.attrs.get("value")
    value = np.zeros(1, np.float32) if a is None else a.value
    if shape is None or shape.dtype != np.int64 or shape.ndim != 1 or (shape < 0).any() \
            or not isinstance(value, np.ndarray) or value.size != 1 or value.dtype == object \
            or len(node.attrs) > (a is not None):
        return None
    return np.full(tuple(int(d) for d in shape), value.reshape(-1)[0], dtype=value.dtype)


def _run_level(graph: Graph, nodes: list[Node], computed: dict[int, np.ndarray]) -> list[list[np.ndarray]] | None:
    """Each node's output arrays from one session in which every input is an initializer
    (a graph constant, a Constant node's value, or an array of `computed`, by value id), or
    None when onnxruntime cannot load or run it. ConstantOfShape nodes are filled without
    it (`_fill`): when all are, no session starts."""
    filled = {id(n): a for n in nodes if not n.domain and n.op == "ConstantOfShape"
              and (a := _fill(n, computed)) is not None}
    if len(filled) == len(nodes):
        return [[filled[id(n)]] for n in nodes]
    protos: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    names: dict[int, str] = {}  # id(value) -> its initializer's name
    outs: list[onnx.ValueInfoProto] = []
    for n in nodes:
        if id(n) in filled:
            continue
        ins = []
        for v in n.inputs:
            if v is None:
                ins.append("")
                continue
            if id(v) not in names:
                a = _input_array(v, computed)
                if a is None:
                    return None
                names[id(v)] = f"c{len(names)}"
                inits.append(array_to_tensor(a, names[id(v)]))
            ins.append(names[id(v)])
        first = len(outs)
        outs.extend(helper.make_tensor_value_info(f"o{first + i}", int(v.type.dtype) if v.type else 0, None)
                    for i, v in enumerate(n.outputs))
        proto = helper.make_node(n.op, ins, [f"o{first + i}" for i in range(len(n.outputs))])
        proto.attribute.extend(attr_to_onnx(k, a) for k, a in n.attrs.items())
        protos.append(proto)
    opsets = [helper.make_opsetid(d, v) for d, v in graph.opset.items()]
    model = helper.make_model(helper.make_graph(protos, "fold", [], outs, initializer=inits), opset_imports=opsets)
    model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 8)
    try:
        # As `FoldConstants._evaluate` runs one node: one thread, no graph optimizations.
        sess = session(model, optimization="disable", threads=1, source=f"graph '{graph.name}' (folding)")
        flat = sess.run(None, {})
    except Exception:  # onnxruntime's own exception types: the nodes are evaluated one by one
        return None
    result, pos = [], 0
    for n in nodes:
        if id(n) in filled:
            result.append([filled[id(n)]])
            continue
        result.append(list(flat[pos:pos + len(n.outputs)]))
        pos += len(n.outputs)
    return result


def evaluate_static(graph: Graph, values: Sequence[Value]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of VALUES, each computed from constants only (`hwnas.ir.registry.is_static`),
    by running the nodes they depend on in one onnxruntime session; the graph is not changed.
    Returns {value name: array} and {value name: why it could not be evaluated}. The quantize
    passes use it for weights built at run time (ConstantOfShape, fp16 + Cast, ...)."""
    arrays = {v.name: v.const for v in values if v.const is not None}
    wanted = [v for v in values if v.const is None]
    if not wanted:
        return arrays, {}
    cone: dict[int, Node] = {}
    stack = [v.producer for v in wanted]
    while stack:
        p = stack.pop()
        if p is None or id(p) in cone:
            continue
        cone[id(p)] = p
        stack.extend(x.producer for x in p.inputs if x is not None and x.const is None)
    nodes = [n for n in graph.nodes if id(n) in cone]  # graph order is topological
    if len(nodes) != len(cone):
        return arrays, {v.name: "it is not computed by nodes of this graph" for v in wanted}
    try:
        got = _run_cone(graph, nodes, wanted)
    except Exception as e:  # onnxruntime's own exception types; one value alone may still run
        if len(wanted) == 1:
            return arrays, {wanted[0].name: f"onnxruntime cannot compute it ({' '.join(str(e).split())[:200]})"}
        failed: dict[str, str] = {}
        for v in wanted:
            one, why = evaluate_static(graph, [v])
            arrays.update(one)
            failed.update(why)
        return arrays, failed
    arrays.update(zip((v.name for v in wanted), got, strict=True))
    return arrays, {}


def _run_cone(graph: Graph, nodes: list[Node], wanted: list[Value]) -> list[np.ndarray]:
    protos, inits, seen = [], [], set()
    for n in nodes:
        proto = helper.make_node(n.op, [v.name if v is not None else "" for v in n.inputs],
                                 [v.name for v in n.outputs], domain=n.domain or None)
        proto.attribute.extend(attr_to_onnx(k, a) for k, a in n.attrs.items())
        protos.append(proto)
        for v in n.inputs:
            if v is not None and v.const is not None and v.name not in seen:
                seen.add(v.name)
                inits.append(array_to_tensor(v.const, v.name))
    outs = [helper.make_tensor_value_info(v.name, int(v.type.dtype) if v.type else 0, None) for v in wanted]
    opsets = [helper.make_opsetid(d, v) for d, v in graph.opset.items()]
    model = helper.make_model(helper.make_graph(protos, "static", [], outs, initializer=inits), opset_imports=opsets)
    model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 8)
    sess = session(model, optimization="disable", threads=0, source=f"graph '{graph.name}' (static values)")
    return list(sess.run([v.name for v in wanted], {}))
