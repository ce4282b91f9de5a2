"""ONNX frontend: an ONNX file or ModelProto in, an `ir.Graph` out.

Models below opset `MIN_OPSET` are brought up with onnx's version converter, so passes
and cost models see one set of operator forms; newer models are kept at their opset.
Types come from onnx's shape inference; ops the registry does not know are imported all
the same (they are merely unpriced). Every node is checked against its onnx schema
(attribute names and kinds, input and output counts) as it is read, so a malformed model
fails here with the node named, not later when the emitted model meets onnx's checker.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import checker, defs, helper, shape_inference, version_converter

from hwnas.errors import ModelLoadError, UnsupportedModelError, first_line
from hwnas.frontends.onnx_if import has_if, inline_static_ifs
from hwnas.ir.alloc import paused_gc
from hwnas.ir.attributes import Attr, UnsupportedAttribute, attr_from_onnx, attr_to_onnx, tensor_to_array
from hwnas.ir.dims import Sizes
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import refresh_types, traits
from hwnas.ir.types import DType, TensorType

MIN_OPSET = 17
"""Default-domain opset every imported model is brought to, at least."""


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (and its external-data files) with errors that name the file."""
    return _read_model(path)[0]


def _read_model(path: str | os.PathLike) -> tuple[onnx.ModelProto, bytes | None]:
    """`load_model`'s model, and the file's bytes where they are all of it (a binary protobuf
    file without external data): shape inference can read them instead of the model serialized
    again (a tenth of its time)."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, not an ONNX file")
    data: bytes | None = None
    try:
        if p.suffix == ".onnx":  # a suffix onnx.load reads as binary protobuf, as this does
            data = p.read_bytes()
            model = onnx.load_model_from_string(data)
        else:  # onnx.load picks the format (text, JSON, ...) from the suffix
            model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as e:
        why = first_line(e) if str(e).strip() else "cannot be parsed"
        raise ModelLoadError(f"{p}: not a valid ONNX model ({why})") from None
    except OSError as e:
        raise ModelLoadError(f"{p}: cannot be read ({e.strerror or e})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError(f"{p}: not a valid ONNX model (no graph in the file)")
    try:
        if _may_use_external_data(model):
            onnx.load_external_data_for_model(model, str(p.parent))
            data = None
    except (OSError, ValueError, onnx.checker.ValidationError) as e:  # a missing data file: ValidationError
        raise ModelLoadError(f"{p}: external data cannot be read ({first_line(e)})") from None
    return model, data


def _may_use_external_data(model: onnx.ModelProto) -> bool:
    """False when no tensor that onnx's external-data loader visits (initializers, tensor
    attributes, subgraphs', functions') can have external data: its walk costs most of a parse."""
    g = model.graph
    if model.functions or any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer):
        return True
    return any((a.HasField("t") and a.t.data_location == onnx.TensorProto.EXTERNAL)
               or any(t.data_location == onnx.TensorProto.EXTERNAL for t in a.tensors)
               or a.type in _SUBGRAPHS for n in g.node for a in n.attribute)


_SUBGRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def import_onnx(model: onnx.ModelProto | str | os.PathLike, *, min_opset: int = MIN_OPSET,
                dims: Sizes | None = None) -> Graph:
    """Lower an ONNX model to the IR. `If` nodes whose condition the input dims decide are
    replaced by the branch `dims` select (`onnx_if`); the graph then holds for those dims only."""
    owned = not isinstance(model, onnx.ModelProto)  # loaded here: changed in place, not copied
    data: bytes | None = None  # the file's bytes while they are the model's
    if not isinstance(model, onnx.ModelProto):
        source = str(model)
        model, data = _read_model(model)
    else:
        source = model.graph.name or "<model>"
    if model.functions:
        raise UnsupportedModelError(f"{source}: model-local functions are not supported")
    _check_opsets(model, source)
    if has_if(model):
        data = None  # the file's bytes keep the If nodes inlined here
        model, owned = inline_static_ifs(model, dims, source), True
    if _has_dynamic_dims(model):
        data = None  # the file's bytes keep the dims cleared here
        model = dynamic_dims(model, in_place=owned)
    upgraded, light = _upgrade(model, min_opset, source)
    if light is not model:  # converted, or weights left out: the file's bytes are not the light model's
        data = None
    model = upgraded
    try:
        types = _inferred_types(light if data is None else data)
    except Exception as e:  # onnx raises its own C++ exception types
        raise ModelLoadError(f"{source}: shape inference failed ({first_line(e)})") from None
    with paused_gc():
        graph = _build(model, types, source)
    if graph.opset.get("", 0) < 22 and any(n.attr("ceil_mode", 0) and _windowed_pool(n) for n in graph.nodes):
        # Before opset 22, onnx's inference keeps a ceil-mode window that starts in the
        # padding; onnxruntime (and PyTorch) drop it. Take the registry's types instead.
        refresh_types(graph)
    return graph


DYNAMIC_DIM = -1
"""A dim_value some exporters (paddle2onnx, older tf2onnx) write for a dim known only at run
time, as onnxruntime reads it; other negative dims are malformed."""


def dynamic_dims(model: onnx.ModelProto, *, in_place: bool = False) -> onnx.ModelProto:
    """The model with each `DYNAMIC_DIM` of its graph's inputs, outputs and value infos made an
    unknown dim: changed `in_place`, else a copy where it has any (the model itself where not)."""
    if not _has_dynamic_dims(model):
        return model
    if not in_place:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    for vi in _tensor_infos(model):
        for d in _dynamic(vi):
            d.Clear()
    return model


def _has_dynamic_dims(model: onnx.ModelProto) -> bool:
    return any(_dynamic(vi) for vi in _tensor_infos(model))


def _tensor_infos(model: onnx.ModelProto) -> Iterator[onnx.ValueInfoProto]:
    g = model.graph
    yield from (vi for field in (g.input, g.output, g.value_info) for vi in field
                if vi.type.WhichOneof("value") == "tensor_type")


def _dynamic(vi: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    return [d for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value") and d.dim_value == DYNAMIC_DIM]


def _check_opsets(model: onnx.ModelProto, source: str) -> None:
    """Opset versions of the domains onnx defines must be ones it knows."""
    known = defs.C.schema_version_map()
    for o in model.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if domain not in known:
            continue
        lo, hi = known[domain]
        if not lo <= o.version <= hi:
            name = domain or "ai.onnx"
            raise UnsupportedModelError(
                f"{source}: opset {o.version} of domain '{name}' is not one onnx {onnx.__version__} knows "
                f"({lo} to {hi})")


def _upgrade(model: onnx.ModelProto, min_opset: int, source: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The model at `min_opset` at least, and its light form (`_without_weights`) for shape
    inference: one light copy serves both the converter and the inference."""
    light = _without_weights(model)
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or version >= min_opset:
        return model, light
    try:
        # Converted without its weights (the converter copies the model several times over,
        # 8x the file's size in memory), which are put back unchanged: adapters rewrite nodes
        # and small initializers (shapes, scales), which `_without_weights` keeps.
        converted = version_converter.convert_version(light, min_opset)
    except Exception as e:
        raise UnsupportedModelError(
            f"{source}: cannot convert opset {version} to {min_opset} ({first_line(e)})"
        ) from None
    large = [t for t in model.graph.initializer if _elements(t) > _PROPAGATED_ELEMENTS]
    if not large:
        return converted, converted
    light = onnx.ModelProto()
    light.CopyFrom(converted)  # the converted model without the weights, for the inference
    declared = {vi.name for vi in model.graph.input}
    moved = {t.name for t in large} - declared
    inputs = [vi for vi in converted.graph.input if vi.name not in moved]
    del converted.graph.input[:]
    converted.graph.input.extend(inputs)
    converted.graph.initializer.extend(large)
    return converted, light


_PROPAGATED_ELEMENTS = 4096
"""Initializers up to this size keep their data for onnx's inference (shape tensors are
propagated through Shape/Gather/Concat chains); larger ones are passed as types only."""


def _inferred_types(model: onnx.ModelProto | bytes) -> dict[str, TensorType | None]:
    """Types of every value from onnx's shape inference with data propagation, on the model's
    light form (`_without_weights`), or on its serialization: only the weights' types matter,
    and copying them is most of the cost on large models."""
    inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    g = inferred.graph
    types: dict[str, TensorType | None] = {}
    known: dict[bytes, TensorType | None] = {}  # models repeat a few types thousands of times
    for vi in (*g.input, *g.value_info, *g.output):
        key = vi.type.SerializeToString()
        if key not in known:
            known[key] = TensorType.from_onnx(vi.type)
        types[vi.name] = known[key]
    return types


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose large initializers are declared as typed inputs instead; the
    model itself when it has none (shape inference and the converter only read it)."""
    g = model.graph
    if all(_elements(t) <= _PROPAGATED_ELEMENTS for t in g.initializer):
        return model
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    lg = light.graph
    lg.name = g.name
    for field in ("node", "input", "output", "value_info"):
        getattr(lg, field).extend(getattr(g, field))
    declared = {vi.name for vi in g.input}
    for t in g.initializer:
        if _elements(t) <= _PROPAGATED_ELEMENTS:
            lg.initializer.append(t)
        elif t.name not in declared:
            lg.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def _elements(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims[:]:  # a slice: cheaper than iterating the repeated field
        n *= d
    return n


def _build(model: onnx.ModelProto, types: dict[str, TensorType | None], source: str) -> Graph:
    g = model.graph
    opset = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    schema_check = _SchemaCheck(opset)
    graph = Graph(g.name or "main", opset)
    graph.doc = g.doc_string

    values: dict[str, Value] = {}
    # A name that is not text is said before any other fault of the file: the initializers'
    # names are checked as the loop reads them, and all of them before an initializer's data
    # fault is said.
    const_types: dict[tuple[np.dtype, tuple[int, ...]], TensorType] = {}  # a few types, shared (frozen)
    for t in g.initializer:
        name = t.name  # read once: protobuf builds a new string on every read
        if type(name) is not str:
            _check_names(g.initializer, source)
        try:
            arr = tensor_to_array(t)
        except ValueError as e:
            _check_names(g.initializer, source)
            _check_names((*g.input, *g.output), source)
            raise ModelLoadError(f"{source}: initializer '{name}': {e}") from None
        key = (arr.dtype, arr.shape)
        ty = const_types.get(key)
        if ty is None:
            ty = const_types[key] = TensorType.of_array(arr)
        v = Value(name, ty, const=arr)
        graph.constants[name] = v
        graph._claim(name)
        values[name] = v
    _check_names((*g.input, *g.output), source)
    if g.sparse_initializer:
        raise UnsupportedModelError(f"{source}: sparse initializers are not supported")
    for vi in g.input:
        if vi.name in values:  # an initializer listed as input (IR < 4): a constant
            continue
        if vi.type.WhichOneof("value") != "tensor_type":
            raise UnsupportedModelError(f"{source}: input '{vi.name}' is not a tensor")
        v = Value(vi.name, _input_type(vi.name, types.get(vi.name), source))
        graph.inputs.append(v)
        graph._claim(vi.name)
        values[vi.name] = v

    nodes = graph.nodes
    pending: dict[str, list[tuple[Node, int]]] = {}
    for i, n in enumerate(g.node):
        # Each field read once: protobuf builds a new Python object on every read.
        op, node_name, domain = n.op_type, n.name, n.domain
        # Protobuf hands out a string that is not UTF-8 as bytes: a corrupt file. Names are checked
        # where they are read (no bytes name enters `values`, so inputs need it only when missing).
        if type(node_name) is not str or type(op) is not str or type(domain) is not str:
            raise ModelLoadError(f"{source}: node #{i} ({op!r}): {_NOT_TEXT}")
        name = node_name or f"{op}_{i}"
        attrs = _node_attrs(n, source, name)
        # Inputs first: a node that reads its own output is a cycle, found below.
        in_names = n.input[:]  # a slice of a repeated field: a new list, copied in C
        try:
            ins: list[Value | None] = [values[x] if x else None for x in in_names]
            missing: list[tuple[int, str]] = []
        except KeyError:  # not defined yet (or not text): one by one
            ins, missing = [], []
            for j, iname in enumerate(in_names):
                if not iname:
                    ins.append(None)
                elif iname in values:
                    ins.append(values[iname])
                elif type(iname) is not str:
                    raise ModelLoadError(f"{source}: node '{name}' ({op}): {_NOT_TEXT}") from None
                else:
                    ins.append(None)
                    missing.append((j, iname))
        outs = []
        for o in n.output[:]:
            if not o:
                # An omitted optional output: keep its position with a private name.
                o = graph.unique_name(f"{name}_unused")
            if type(o) is not str:
                raise ModelLoadError(f"{source}: node '{name}' ({op}): {_NOT_TEXT}")
            if o in values:
                raise ModelLoadError(f"{source}: node '{name}' ({op}) redefines '{o}'")
            v = Value(o, types.get(o))
            values[o] = v
            graph._claim(o)
            outs.append(v)
        schema_check(n, op, domain, attrs, in_names, len(outs), source, name)  # its names are text by now
        node = Node(op, ins, outs, attrs, graph.unique_name(name), domain if domain != "ai.onnx" else "")
        node.graph = graph
        nodes.append(node)
        for j, iname in missing:
            pending.setdefault(iname, []).append((node, j))

    # Inputs that name a value defined later: the file is out of order (or has a cycle).
    for iname, uses in pending.items():
        if iname not in values:
            node = uses[0][0]
            raise ModelLoadError(f"{source}: node '{node.name}' ({node.op}) reads '{iname}', which nothing defines")
        for node, j in uses:
            node.set_input(j, values[iname])
    for vi in g.output:
        if vi.name not in values:
            raise ModelLoadError(f"{source}: graph output '{vi.name}' is not defined")
        if vi.type.WhichOneof("value") not in (None, "tensor_type"):
            # The IR types tensors only; a sequence or optional output could not be emitted.
            raise UnsupportedModelError(f"{source}: output '{vi.name}' is not a tensor")
        graph.outputs.append(values[vi.name])
    if pending:
        from hwnas.ir.graph import IRError

        try:
            graph.toposort()
        except IRError as e:
            raise ModelLoadError(f"{source}: {e}") from None
    return graph


_NOT_TEXT = "a name in it is not UTF-8 text"


def _check_names(protos: Iterable[onnx.TensorProto | onnx.ValueInfoProto], source: str) -> None:
    """ModelLoadError naming the first of these graph inputs, outputs or initializers whose name
    is not text (protobuf hands out a name that is not UTF-8 as bytes)."""
    bad = next((x for x in protos if type(x.name) is not str), None)
    if bad is not None:
        raise ModelLoadError(f"{source}: the name {bad.name!r} of a graph input, output or initializer "
                             "is not UTF-8 text")


def _node_attrs(n: onnx.NodeProto, source: str, name: str) -> dict[str, Attr]:
    """The node's attributes in the IR, or ModelLoadError/UnsupportedModelError naming the first
    that cannot be held."""
    protos = n.attribute
    if not protos:  # most nodes: no comprehension to run
        return {}
    try:
        attrs = {a.name: attr_from_onnx(a) for a in protos}
        if all(type(k) is str for k in attrs):
            return attrs
    except (UnsupportedAttribute, ValueError):
        pass
    attrs = {}  # one by one, for the error of the first attribute that fails
    for a in n.attribute:
        if type(a.name) is not str:
            raise ModelLoadError(f"{source}: node '{name}' ({n.op_type}): {_NOT_TEXT}")
        try:
            attrs[a.name] = attr_from_onnx(a)
        except UnsupportedAttribute as e:
            raise UnsupportedModelError(f"{source}: node '{name}' ({n.op_type}): {e}") from None
        except ValueError as e:  # a tensor attribute whose data does not fit its type and dims
            raise ModelLoadError(f"{source}: node '{name}' ({n.op_type}): attribute '{a.name}': {e}") from None
    return attrs


def _input_type(name: str, t: TensorType | None, source: str) -> TensorType | None:
    """A graph input's type, refused when onnx could not emit it back (no element type) or no
    tensor could have it (a negative dimension)."""
    if t is None:
        return None
    if t.dtype is DType.UNDEFINED:
        raise ModelLoadError(f"{source}: input '{name}' has no element type")
    if t.shape is not None and any(isinstance(d, int) and d < 0 for d in t.shape):
        raise ModelLoadError(f"{source}: input '{name}' has a negative dimension ({t})")
    return t


class _SchemaCheck:
    """onnx's checker on each node as it will be emitted: attribute names, kinds and required
    ones, input and output counts, ops onnx does not define in its own domains. A node's form
    (op, attribute names and kinds, which inputs are given, output count) is checked once: the
    checker looks at nothing else, and models repeat a few forms thousands of times."""

    def __init__(self, opset: dict[str, int]):
        self.ctx = checker.C.CheckerContext()
        ops = [helper.make_opsetid(d, v) for d, v in opset.items()]
        self.ctx.ir_version = max(helper.find_min_ir_version_for(ops, ignore_unknown=True), 8)
        self.ctx.opset_imports = dict(opset)
        self.scope = checker.C.LexicalScopeContext()
        self.passed: set[tuple] = set()

    def __call__(self, n: onnx.NodeProto, op: str, domain: str, attrs: dict[str, Attr], inputs: list[str],
                 n_outputs: int, source: str, name: str) -> None:
        form = (domain, op, tuple([(k, a.kind) for k, a in attrs.items()]) if attrs else (),
                tuple(map(bool, inputs)) if "" in inputs else len(inputs), n_outputs)
        if form in self.passed:
            return
        where = f"{source}: node '{name}' ({op})"
        proto = helper.make_node(n.op_type, list(n.input), [o or f"_{i}" for i, o in enumerate(n.output)],
                                 name=n.name or None, domain=n.domain or None)
        try:
            proto.attribute.extend(attr_to_onnx(k, a) for k, a in attrs.items())
            checker.C.check_node(proto.SerializeToString(), self.ctx, self.scope)
        except (checker.ValidationError, ValueError, TypeError) as e:
            raise ModelLoadError(f"{where}: {first_line(e)}") from None
        self.passed.add(form)


def _windowed_pool(node: Node) -> bool:
    """A pool over windows (not the whole image): the ops with a ceil_mode."""
    pool = traits(node).pool
    return pool is not None and not pool.whole
