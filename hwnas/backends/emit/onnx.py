"""Emit an `ir.Graph` as an ONNX model that passes onnx.checker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from hwnas.errors import UnsupportedModelError
from hwnas.files import write_atomic
from hwnas.ir.attributes import add_tensor, attr_to_onnx
from hwnas.ir.graph import Graph, IRError, Value
from hwnas.ir.types import DType, TensorType

PRODUCER = "hwnas"


def to_onnx(graph: Graph, *, value_info: bool = True) -> onnx.ModelProto:
    """The graph as an ONNX model: same names, attributes, constants (as initializers) and
    opsets; `value_info` adds the types of intermediate values."""
    # Built in place, field by field as onnx.helper's make_* functions set them (the same
    # bytes), without their per-call type checks and without copying every node, value and
    # weight once more into the graph and again into the model.
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(graph.opset.items())]
    model = helper.make_model(onnx.GraphProto(), opset_imports=opsets, producer_name=PRODUCER)
    g = model.graph
    for n in graph.nodes:
        proto = g.node.add(op_type=n.op, input=["" if v is None else v.name for v in n.inputs],
                           output=[v.name for v in n.outputs],
                           attribute=[attr_to_onnx(k, a) for k, a in n.attrs.items()])
        if n.name:
            proto.name = n.name
        if n.domain:
            proto.domain = n.domain
    for v in graph.constants.values():
        if v.const is None:
            raise IRError(f"constant '{v.name}' has no value")
        add_tensor(g.initializer, v.const, v.name)
    for v in (*graph.inputs, *graph.outputs):
        _check_boundary_type(v)
    g.name = graph.name
    # Models repeat a few types thousands of times: each is serialized once, as the `type` of a
    # ValueInfoProto, and merged into each value's (parsing the bytes costs less than copying
    # the TypeProto in).
    types: dict[TensorType, bytes] = {}

    def add(field: Any, v: Value) -> None:
        if v.type is None:
            field.add(name=v.name)
            return
        tp = types.get(v.type)
        if tp is None:
            tp = types[v.type] = onnx.ValueInfoProto(type=v.type.to_onnx()).SerializeToString()
        field.add(name=v.name).MergeFromString(tp)

    for v in graph.inputs:
        add(g.input, v)
    for v in graph.outputs:
        add(g.output, v)
    # Outputs nobody reads that ONNX allows to be omitted are kept: emission is faithful.
    if value_info:
        out_ids = {id(v) for v in graph.outputs}
        for n in graph.nodes:
            for v in n.outputs:
                if v.type is not None and id(v) not in out_ids:
                    add(g.value_info, v)
    if graph.doc:
        g.doc_string = graph.doc
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
