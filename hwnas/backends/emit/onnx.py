"""Emit an `ir.Graph` as an ONNX model that passes onnx.checker."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import helper

from hwnas.errors import UnsupportedModelError
from hwnas.files import write_atomic
from hwnas.ir.attributes import array_to_tensor, attr_to_onnx
from hwnas.ir.graph import Graph, IRError, Value
from hwnas.ir.types import DType

PRODUCER = "hwnas"


def to_onnx(graph: Graph, *, value_info: bool = True) -> onnx.ModelProto:
    """The graph as an ONNX model: same names, attributes, constants (as initializers) and
    opsets; `value_info` adds the types of intermediate values."""
    def vinfo(v: Value) -> onnx.ValueInfoProto:
        vi = onnx.ValueInfoProto(name=v.name)
        if v.type is not None:
            vi.type.CopyFrom(v.type.to_onnx())
        return vi

    nodes = []
    for n in graph.nodes:
        proto = helper.make_node(
            n.op,
            ["" if v is None else v.name for v in n.inputs],
            [v.name for v in n.outputs],
            name=n.name,
            domain=n.domain or None,
        )
        proto.attribute.extend(attr_to_onnx(k, a) for k, a in n.attrs.items())
        nodes.append(proto)
    initializers = []
    for v in graph.constants.values():
        if v.const is None:
            raise IRError(f"constant '{v.name}' has no value")
        initializers.append(array_to_tensor(v.const, v.name))
    # Outputs nobody reads that ONNX allows to be omitted are kept: emission is faithful.
    inner = []
    if value_info:
        out_ids = {id(v) for v in graph.outputs}
        inner = [vinfo(v) for n in graph.nodes for v in n.outputs if v.type is not None and id(v) not in out_ids]
    for v in (*graph.inputs, *graph.outputs):
        _check_boundary_type(v)
    g = helper.make_graph(
        nodes,
        graph.name,
        [vinfo(v) for v in graph.inputs],
        [vinfo(v) for v in graph.outputs],
        initializer=initializers,
        value_info=inner,
        doc_string=graph.doc or None,
    )
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(graph.opset.items())]
    model = helper.make_model(g, opset_imports=opsets, producer_name=PRODUCER)
    model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 8)
    return model


def _check_boundary_type(v: Value) -> None:
    """ONNX requires a graph's inputs and outputs to have an element type and a rank; a value an
    op of another domain produced may have neither (onnx cannot infer it)."""
    if v.type is not None and v.type.dtype is not DType.UNDEFINED and v.type.shape is not None:
        return
    by = f" (computed by node '{v.producer.name}' ({v.producer.qualified_op}), whose output types are unknown)" \
        if v.producer is not None else ""
    what = "no known type" if v.type is None or v.type.dtype is DType.UNDEFINED else "no known rank"
    raise UnsupportedModelError(f"cannot write ONNX: graph {'input' if v.producer is None else 'output'} "
                                f"'{v.name}' has {what}{by}; ONNX requires one")


def save_onnx(graph: Graph, path: str | os.PathLike, *, check: bool = True) -> onnx.ModelProto:
    """Write the model atomically: a failure leaves no file behind."""
    model = to_onnx(graph)
    data = model.SerializeToString()  # once: the checker reads the same bytes we write
    if check:
        onnx.checker.check_model(data, full_check=False)
    write_atomic(Path(path), data)
    return model
