"""The IR's text form: stable, readable, and parsed back to an equal graph.

    graph main {
      opset {"": 17}
      input %x: f32[1,3,32,32]
      const %w: f32[8,3,3,3] = dense<b64"...">
      %y: f32[1,8,32,32] = Conv(%x, %w, _) {pads=[1,1,1,1]} @conv1 #{"fused_activation": ...}
      output %y
    }

One statement per line. Names that are not plain identifiers are JSON-quoted. Absent
optional inputs print as `_`. Small numeric constants print as lists, others as base64
of their little-endian bytes; `elide_weights=True` replaces large data by a digest (for
reading, not for parsing back).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import numpy as np

from hwnas.ir.annotations import annotation_from_dict, annotation_to_dict
from hwnas.ir.attributes import Attr, AttrKind
from hwnas.ir.graph import Graph, IRError, Node, Value
from hwnas.ir.types import DType, TensorType

_IDENT = re.compile(r"(?!_\Z)[A-Za-z_][A-Za-z0-9_.]*\Z")
INLINE_LIMIT = 16
# Types whose elements print exactly as decimal numbers (not float16, bfloat16, float8, int4).
_INLINE_DTYPES = {np.dtype(t) for t in ("float32", "float64", "int8", "int16", "int32", "int64",
                                         "uint8", "uint16", "uint32", "uint64")}


class ParseError(IRError):
    """Text (or a JSON dump) that does not describe a graph; the message names the line."""


# -- printing --------------------------------------------------------------------------


def _name(s: str) -> str:
    return s if _IDENT.match(s) else json.dumps(s)


def _type(t: TensorType | None) -> str:
    if t is None:
        return ""
    if t.shape is None:
        return f": {t.dtype.short}[*]"
    dims = ",".join("?" if d is None else str(d) if isinstance(d, int) else _name(d) for d in t.shape)
    return f": {t.dtype.short}[{dims}]"


def _float(x: float) -> str:
    r = repr(float(x))
    return r if any(c in r for c in ".en") else r + ".0"  # 'inf', 'nan' keep their letters


def _string(s: str | bytes) -> str:
    """A string element: JSON text when it is UTF-8, else `bytes<"base64">`."""
    if isinstance(s, bytes):
        try:
            return json.dumps(s.decode("utf-8"))
        except UnicodeDecodeError:
            return 'bytes<"' + base64.b64encode(s).decode() + '">'
    return json.dumps(s)


def _data(a: np.ndarray, elide: bool) -> str:
    if a.dtype == object:
        return "dense<[" + ", ".join(_string(s) for s in a.ravel()) + "]>"
    if a.size <= INLINE_LIMIT and a.dtype in _INLINE_DTYPES:
        fmt = _float if a.dtype.kind == "f" else str
        return "dense<[" + ", ".join(fmt(x) for x in a.ravel().tolist()) + "]>"
    raw = np.ascontiguousarray(a).tobytes()
    if elide and a.size > INLINE_LIMIT:
        return f'dense<elided sha1 "{hashlib.sha1(raw).hexdigest()[:16]}">'
    return 'dense<b64"' + base64.b64encode(raw).decode() + '">'


def _tensor(a: np.ndarray, elide: bool) -> str:
    return f"tensor<{TensorType.of_array(a)} = {_data(a, elide)}>"


def _attr(a: Attr, elide: bool) -> str:
    k, v = a.kind, a.value
    if k is AttrKind.INT:
        return str(v)
    if k is AttrKind.FLOAT:
        return _float(v)
    if k is AttrKind.STRING:
        return json.dumps(v) if isinstance(v, str) else 'bytes<"' + base64.b64encode(v).decode() + '">'
    if k is AttrKind.TENSOR:
        return _tensor(v, elide)
    if not v:
        return f"{k.value}[]"
    if k is AttrKind.INTS:
        return "[" + ", ".join(str(x) for x in v) + "]"
    if k is AttrKind.FLOATS:
        return "[" + ", ".join(_float(x) for x in v) + "]"
    if k is AttrKind.STRINGS:
        return "[" + ", ".join(_attr(Attr(AttrKind.STRING, s), elide) for s in v) + "]"
    return "[" + ", ".join(_tensor(t, elide) for t in v) + "]"


def print_node(n: Node, elide_weights: bool = False) -> str:
    """One node as its statement line (without indentation)."""
    outs = ", ".join(f"%{_name(v.name)}{_type(v.type)}" for v in n.outputs)
    ins = ", ".join("_" if v is None else f"%{_name(v.name)}" for v in n.inputs)
    op = f"{_name(n.domain)}::{_name(n.op)}" if n.domain else _name(n.op)
    line = f"{outs} = {op}({ins})"
    if n.attrs:
        line += " {" + ", ".join(f"{_name(k)}={_attr(n.attrs[k], elide_weights)}" for k in sorted(n.attrs)) + "}"
    line += f" @{_name(n.name)}"
    ann = {k: annotation_to_dict(a) for k, a in n.ann.items()}
    if ann:
        line += " #" + json.dumps(ann, sort_keys=True)
    return line


def print_graph(graph: Graph, *, elide_weights: bool = False) -> str:
    """The graph's text form; `parse_graph` reads it back to an equal graph unless weights
    were elided."""
    lines = [f"graph {_name(graph.name)} {{", "  opset " + json.dumps(dict(sorted(graph.opset.items())))]
    if graph.doc:
        lines.append("  doc " + json.dumps(graph.doc))
    lines += [f"  input %{_name(v.name)}{_type(v.type)}" for v in graph.inputs]
    for v in graph.constants.values():
        if v.const is None:
            raise IRError(f"constant '{v.name}' has no value")
        lines.append(f"  const %{_name(v.name)}{_type(v.type)} = {_data(v.const, elide_weights)}")
    lines += ["  " + print_node(n, elide_weights) for n in graph.nodes]
    lines.append("  output " + ", ".join(f"%{_name(v.name)}" for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- parsing ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<num>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)(?![A-Za-z0-9_.]))
    | (?P<ident>(?!_(?![A-Za-z0-9_.]))[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<punct>::|[%@=(){}\[\],:<>?*_#])
    )""",
    re.VERBOSE,
)


class _Tokens:
    def __init__(self, line: str, lineno: int):
        self.line, self.lineno, self.pos = line, lineno, 0

    def fail(self, what: str) -> ParseError:
        return ParseError(f"line {self.lineno}: {what} at column {self.pos + 1}: {self.line.strip()[:120]}")

    def peek(self) -> tuple[str, str] | None:
        m = _TOKEN.match(self.line, self.pos)
        if not m or m.end() == m.start() or m.lastgroup is None:
            return None
        return m.lastgroup, m.group(m.lastgroup)

    def next(self) -> tuple[str, str]:
        m = _TOKEN.match(self.line, self.pos)
        if not m or m.lastgroup is None:  # every alternative is a named group: only a miss has none
            raise self.fail("unexpected text")
        self.pos = m.end()
        return m.lastgroup, m.group(m.lastgroup)

    def accept(self, punct: str) -> bool:
        t = self.peek()
        if t is not None and t[0] == "punct" and t[1] == punct:
            self.next()
            return True
        return False

    def expect(self, punct: str) -> None:
        if not self.accept(punct):
            raise self.fail(f"expected '{punct}'")

    def name(self) -> str:
        kind, text = self.next()
        if kind == "str":
            return json.loads(text)
        if kind in ("ident", "num"):
            return text
        raise self.fail("expected a name")

    def rest(self) -> str:
        r = self.line[self.pos:]
        self.pos = len(self.line)
        return r

    def done(self) -> bool:
        return not self.line[self.pos:].strip()


def _parse_type(t: _Tokens) -> TensorType:
    # The undefined element type prints as '?'.
    dtype = DType.UNDEFINED if t.accept("?") else DType.parse(t.name())
    t.expect("[")
    if t.accept("*"):
        t.expect("]")
        return TensorType(dtype, None)
    dims: list[Any] = []
    while not t.accept("]"):
        if t.accept("?"):
            dims.append(None)
        else:
            kind, text = t.next()
            is_int = kind == "num" and text not in ("inf", "nan")  # a dim named 'inf' prints bare
            dims.append(int(text) if is_int else json.loads(text) if kind == "str" else text)
        t.accept(",")
    return TensorType(dtype, tuple(dims))


def _parse_value_decl(t: _Tokens) -> tuple[str, TensorType | None]:
    t.expect("%")
    name = t.name()
    return name, (_parse_type(t) if t.accept(":") else None)


def _parse_data(t: _Tokens, ty: TensorType) -> np.ndarray:
    if t.name() != "dense":
        raise t.fail("expected 'dense<...>'")
    t.expect("<")
    shape = () if ty.shape is None else ty.static_shape
    if shape is None:
        raise t.fail(f"constant data needs a static shape, not {ty}")
    kind, text = t.next()
    if kind == "ident" and text == "elided":
        raise t.fail("weights were elided when this text was printed; it cannot be parsed back")
    if kind == "ident" and text == "b64":
        raw = base64.b64decode(json.loads(t.next()[1]))
        arr = np.frombuffer(raw, dtype=ty.dtype.numpy).reshape(shape).copy()
    elif kind == "punct" and text == "[":
        items: list[Any] = []
        while not t.accept("]"):
            k, x = t.next()
            if ty.dtype is DType.STRING:
                # String elements are bytes, as ONNX holds them.
                items.append(json.loads(x).encode("utf-8") if k == "str" else _parse_bytes(t, x))
            else:
                items.append(float(x) if ty.dtype.is_float else int(x))
            t.accept(",")
        dtype = object if ty.dtype is DType.STRING else ty.dtype.numpy
        arr = np.array(items, dtype=dtype).reshape(shape)
    else:
        raise t.fail("expected constant data")
    t.expect(">")
    return arr


def _parse_bytes(t: _Tokens, word: str) -> bytes:
    if word != "bytes":
        raise t.fail("expected a string")
    t.expect("<")
    kind, text = t.next()
    if kind != "str":
        raise t.fail("expected base64 text")
    v = base64.b64decode(json.loads(text))
    t.expect(">")
    return v


def _parse_tensor(t: _Tokens) -> np.ndarray:
    t.expect("<")
    ty = _parse_type(t)
    t.expect("=")
    arr = _parse_data(t, ty)
    t.expect(">")
    return arr


def _parse_attr(t: _Tokens) -> Attr:
    kind, text = t.next()
    if kind == "num":
        return Attr.float(float(text)) if any(c in text for c in ".en") else Attr.int(int(text))
    if kind == "str":
        return Attr(AttrKind.STRING, json.loads(text))
    if kind == "ident" and text == "bytes":
        return Attr(AttrKind.STRING, _parse_bytes(t, text))
    if kind == "ident" and text == "tensor":
        return Attr(AttrKind.TENSOR, _parse_tensor(t))
    if kind == "ident" and text in ("ints", "floats", "strings", "tensors"):
        t.expect("[")
        t.expect("]")
        return Attr(AttrKind(text), ())
    if kind == "punct" and text == "[":
        items = []
        while not t.accept("]"):
            items.append(_parse_attr(t))
            t.accept(",")
        elem = items[0].kind
        if elem is AttrKind.INT and any(i.kind is AttrKind.FLOAT for i in items):
            elem = AttrKind.FLOAT
        list_kind = {AttrKind.INT: AttrKind.INTS, AttrKind.FLOAT: AttrKind.FLOATS,
                     AttrKind.STRING: AttrKind.STRINGS, AttrKind.TENSOR: AttrKind.TENSORS}[elem]
        vals = tuple(float(i.value) if elem is AttrKind.FLOAT else i.value for i in items)
        return Attr(list_kind, vals)
    raise t.fail("expected an attribute value")


def parse_graph(text: str) -> Graph:
    """The graph of a text written by `print_graph`; ParseError naming the line otherwise.
    Lines starting with `//` are comments."""
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.strip().startswith("//")]
    if not lines:
        raise ParseError("empty text: no graph")
    lineno, first = lines[0]
    t = _Tokens(first, lineno)
    if t.name() != "graph":
        raise t.fail("expected 'graph'")
    try:
        graph = Graph(t.name(), {})
    except ValueError as e:  # a badly quoted name
        raise t.fail(f"bad graph name ({e})") from None
    t.expect("{")
    values: dict[str, Value] = {}
    pending: list[tuple[Node, int, str, _Tokens]] = []

    def define(v: Value, tk: _Tokens) -> Value:
        if v.name in values:
            raise tk.fail(f"'{v.name}' is defined twice")
        values[v.name] = v
        graph._claim(v.name)
        return v

    closed = False
    for lineno, line in lines[1:]:
        t = _Tokens(line, lineno)
        if closed:
            raise t.fail("text after the end of the graph")
        try:
            closed = _parse_statement(t, graph, values, define, pending)
        except ParseError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # Malformed JSON, base64, numbers or annotations: the error still names the line.
            raise t.fail(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    if not closed:
        raise ParseError("the graph is not closed with '}'")
    for node, k, name, tk in pending:
        if name not in values:
            raise tk.fail(f"node '{node.name}' reads '{name}', which is not defined")
        node.set_input(k, values[name])
    return graph


def _parse_statement(t: _Tokens, graph: Graph, values: dict, define: Any, pending: list) -> bool:
    """One line of the graph's body; True when it is the closing brace."""
    head = t.peek()
    if head == ("punct", "}"):
        return True
    if head == ("punct", "%"):
        _parse_node(t, graph, values, define, pending)
        return False
    word = t.name()
    if word == "opset":
        graph.opset = {str(k): int(v) for k, v in json.loads(t.rest()).items()}
    elif word == "doc":
        graph.doc = json.loads(t.rest())
    elif word == "input":
        name, ty = _parse_value_decl(t)
        graph.inputs.append(define(Value(name, ty), t))
    elif word == "const":
        name, ty = _parse_value_decl(t)
        if ty is None:
            raise t.fail("a constant needs a type")
        t.expect("=")
        v = define(Value(name, ty, const=_parse_data(t, ty)), t)
        graph.constants[name] = v
    elif word == "output":
        while not t.done():
            t.expect("%")
            name = t.name()
            if name not in values:
                raise t.fail(f"output '{name}' is not defined")
            graph.outputs.append(values[name])
            t.accept(",")
    else:
        raise t.fail(f"unknown statement '{word}'")
    if not t.done():
        raise t.fail("unexpected text")
    return False


def _parse_node(t: _Tokens, graph: Graph, values: dict, define: Any, pending: list) -> None:
    outs = []
    while True:
        name, ty = _parse_value_decl(t)
        outs.append(define(Value(name, ty), t))
        if not t.accept(","):
            break
    t.expect("=")
    op, domain = t.name(), ""
    if t.accept("::"):
        domain, op = op, t.name()
    t.expect("(")
    ins: list[str | None] = []
    while not t.accept(")"):
        if t.accept("_"):
            ins.append(None)
        else:
            t.expect("%")
            ins.append(t.name())
        t.accept(",")
    attrs = {}
    if t.accept("{"):
        while not t.accept("}"):
            key = t.name()
            t.expect("=")
            attrs[key] = _parse_attr(t)
            t.accept(",")
    t.expect("@")
    node_name = t.name()
    node = Node(op, [values.get(n) if n is not None else None for n in ins], outs, attrs, node_name, domain)
    for k, n in enumerate(ins):
        if n is not None and n not in values:
            pending.append((node, k, n, t))
    if t.accept("#"):
        for key, data in json.loads(t.rest()).items():
            setattr(node.ann, key, annotation_from_dict(key, data))
    if not t.done():
        raise t.fail("unexpected text")
    node.graph = graph
    graph._claim(node_name)
    graph.nodes.append(node)
