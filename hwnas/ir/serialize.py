"""JSON (+ .npz of weights) serialization of a graph, round-tripping exactly."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.ir.annotations import annotation_from_dict, annotation_to_dict
from hwnas.ir.attributes import Attr, AttrKind
from hwnas.ir.graph import Graph, IRError, Node, Value
from hwnas.ir.text import ParseError, _parse_type, _Tokens, _type
from hwnas.ir.types import DType, TensorType

FORMAT = "hwnas-graph"
VERSION = 1


def _type_text(t: TensorType | None) -> str | None:
    return _type(t)[2:] if t is not None else None


def _type_from(text: str | None) -> TensorType | None:
    return None if text is None else _parse_type(_Tokens(text, 0))


class _Arrays:
    """Numeric arrays go to the .npz as raw bytes (so 4-bit and float8 types survive)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def put(self, a: np.ndarray) -> dict[str, Any]:
        meta: dict[str, Any] = {"type": str(TensorType.of_array(a))}
        if a.dtype == object:
            meta["strings"] = [_string_json(s) for s in a.ravel()]
        else:
            key = f"a{len(self.arrays)}"
            self.arrays[key] = np.frombuffer(np.ascontiguousarray(a).tobytes(), dtype=np.uint8)
            meta["npz"] = key
        return meta


def _string_json(s: str | bytes) -> str | dict[str, str]:
    if isinstance(s, bytes):
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError:
            return {"bytes": s.hex()}
    return s


def _get_array(meta: dict[str, Any], npz: Any) -> np.ndarray:
    ty = _type_from(meta["type"])
    assert ty is not None
    shape = () if ty.shape is None else ty.static_shape
    if shape is None:
        raise ParseError(f"array of type {ty}: stored arrays have static shapes")
    if "strings" in meta:
        items = [s.encode("utf-8") if isinstance(s, str) else bytes.fromhex(s["bytes"]) for s in meta["strings"]]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(shape)
    return np.frombuffer(npz[meta["npz"]].tobytes(), dtype=ty.dtype.numpy).reshape(shape).copy()


def _attr_json(a: Attr, arrays: _Arrays) -> dict[str, Any]:
    if a.kind is AttrKind.TENSOR:
        return {"kind": a.kind.value, "value": arrays.put(a.value)}
    if a.kind is AttrKind.TENSORS:
        return {"kind": a.kind.value, "value": [arrays.put(t) for t in a.value]}
    if a.kind is AttrKind.STRING and isinstance(a.value, bytes):
        return {"kind": a.kind.value, "bytes": a.value.hex()}
    if a.kind is AttrKind.STRINGS:
        return {"kind": a.kind.value, "value": [s if isinstance(s, str) else {"bytes": s.hex()} for s in a.value]}
    v = a.value
    if a.kind is AttrKind.FLOAT:
        v = repr(v)  # JSON has no inf/nan
    elif a.kind is AttrKind.FLOATS:
        v = [repr(x) for x in v]
    return {"kind": a.kind.value, "value": list(v) if isinstance(v, tuple) else v}


def _attr_from(d: dict[str, Any], npz: Any) -> Attr:
    kind = AttrKind(d["kind"])
    if "bytes" in d:
        return Attr(kind, bytes.fromhex(d["bytes"]))
    v = d["value"]
    if kind is AttrKind.TENSOR:
        return Attr(kind, _get_array(v, npz))
    if kind is AttrKind.TENSORS:
        return Attr(kind, tuple(_get_array(m, npz) for m in v))
    if kind is AttrKind.FLOAT:
        return Attr(kind, float(v))
    if kind is AttrKind.FLOATS:
        return Attr(kind, tuple(float(x) for x in v))
    if kind is AttrKind.STRINGS:
        return Attr(kind, tuple(s if isinstance(s, str) else bytes.fromhex(s["bytes"]) for s in v))
    return Attr(kind, tuple(v) if isinstance(v, list) else v)


def to_json(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The graph as a JSON-ready document and the arrays (raw bytes) its `npz` keys name."""
    arrays = _Arrays()

    def val(v: Value) -> dict[str, Any]:
        return {"name": v.name, "type": _type_text(v.type)}

    constants = []
    for v in graph.constants.values():
        if v.const is None:
            raise IRError(f"constant '{v.name}' has no value")
        constants.append({"name": v.name, **arrays.put(v.const)})
    doc = {
        "format": FORMAT, "version": VERSION, "name": graph.name, "opset": graph.opset, "doc": graph.doc,
        "inputs": [val(v) for v in graph.inputs],
        "constants": constants,
        "nodes": [
            {
                "name": n.name, "op": n.op, "domain": n.domain,
                "inputs": [None if v is None else v.name for v in n.inputs],
                "outputs": [val(v) for v in n.outputs],
                "attrs": {k: _attr_json(a, arrays) for k, a in sorted(n.attrs.items())},
                "annotations": {k: annotation_to_dict(a) for k, a in n.ann.items()},
            }
            for n in graph.nodes
        ],
        "outputs": [v.name for v in graph.outputs],
    }
    return doc, arrays.arrays


def from_json(doc: dict[str, Any], arrays: Any) -> Graph:
    """The graph of a `to_json` document; `arrays` maps its `npz` keys to byte arrays."""
    if doc.get("format") != FORMAT:
        raise ParseError(f"not an {FORMAT} document")
    g = Graph(doc["name"], doc["opset"])
    g.doc = doc.get("doc", "")
    values: dict[str, Value] = {}

    def define(v: Value) -> Value:
        values[v.name] = v
        g._claim(v.name)
        return v

    g.inputs = [define(Value(d["name"], _type_from(d["type"]))) for d in doc["inputs"]]
    for d in doc["constants"]:
        g.constants[d["name"]] = define(Value(d["name"], _type_from(d["type"]), const=_get_array(d, arrays)))
    for d in doc["nodes"]:
        outs = [define(Value(o["name"], _type_from(o["type"]))) for o in d["outputs"]]
        missing = [x for x in d["inputs"] if x is not None and x not in values]
        if missing:
            raise ParseError(f"node '{d['name']}' reads '{missing[0]}', which is not defined before it")
        ins = [None if x is None else values[x] for x in d["inputs"]]
        n = Node(d["op"], ins, outs, {k: _attr_from(a, arrays) for k, a in d["attrs"].items()}, d["name"], d["domain"])
        for key, data in d["annotations"].items():
            setattr(n.ann, key, annotation_from_dict(key, data))
        n.graph = g
        g._claim(n.name)
        g.nodes.append(n)
    g.outputs = [values[x] for x in doc["outputs"]]
    return g


def save_json(graph: Graph, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write GRAPH.json and GRAPH.npz beside it; both appear whole or not at all."""
    from hwnas.files import write_atomic

    path = Path(path)
    weights = path.with_suffix(".npz")
    doc, arrays = to_json(graph)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)  # raw bytes only: string tensors live in the JSON
    write_atomic(weights, buf.getvalue())
    write_atomic(path, json.dumps(doc, indent=1))
    return path, weights


def load_json(path: str | os.PathLike) -> Graph:
    """The graph that `save_json` wrote to `path` and the .npz beside it."""
    path = Path(path)
    doc = json.loads(path.read_text())
    weights = path.with_suffix(".npz")
    try:
        with np.load(weights, allow_pickle=False) as npz:
            return from_json(doc, npz)
    except ParseError:
        raise
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as e:  # ValueError: not an .npz at all
        raise ParseError(f"{weights}: weights cannot be read ({e})") from None


__all__ = ["DType", "from_json", "load_json", "save_json", "to_json"]
