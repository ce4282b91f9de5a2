"""The text form: print -> parse gives an equal graph on real models and on every node
test model hwnas imports; corner cases of names, types and data; parse errors."""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.annotations import FusedActivation, FusedInto, Granularity, Placement, QuantSpec, SparsitySpec
from hwnas.ir.attributes import Attr, AttrKind
from hwnas.ir.equality import graph_difference
from hwnas.ir.graph import Graph
from hwnas.ir.text import ParseError, parse_graph, print_graph
from hwnas.ir.types import DType, TensorType
from hwnas.ir.verifier import verify

from .sweep import assert_all_round_trip

F4 = TensorType(DType.FLOAT, (4,))


def round_trip(graph: Graph) -> Graph:
    text = print_graph(graph)
    back = parse_graph(text)
    assert graph_difference(graph, back) is None, graph_difference(graph, back)
    assert print_graph(back) == text
    return back


def test_light_models_round_trip(light_model: str) -> None:
    back = round_trip(import_onnx(light_model))
    verify(back)


def test_every_importable_node_test_model_round_trips(
    imported_cases: tuple, record_property: Callable[[str, object], None]
) -> None:
    def check(graph: Graph) -> str | None:
        text = print_graph(graph)
        back = parse_graph(text)
        diff = graph_difference(graph, back)
        if diff is None and print_graph(back) != text:
            diff = "printing the parsed graph gives other text"
        return diff

    assert_all_round_trip(imported_cases, check, "text round trip", record_property)


def annotated() -> Graph:
    g = Graph("annotated")
    x = g.add_input("x", TensorType(DType.FLOAT, (1, 3, 8, 8)))
    w = g.add_constant(np.ones((4, 3, 3, 3), np.float32), "w")
    conv = g.add_node(
        "Conv", [x, w, None], name="conv", output_names=["c"], output_types=[TensorType(DType.FLOAT, (1, 4, 6, 6))]
    )
    relu = g.add_node(
        "Relu", [conv.outputs[0]], name="relu", output_names=["r"], output_types=[TensorType(DType.FLOAT, (1, 4, 6, 6))]
    )
    conv.ann.fused_activation = FusedActivation("Relu", "relu")
    conv.ann.quant = QuantSpec(w_bits=4, a_bits=8, w_granularity=Granularity.PER_TENSOR, symmetric=False)
    conv.ann.sparsity = SparsitySpec(weight_sparsity=0.5, structured=True, kept_channels=2)
    conv.ann.placement = Placement("analog-crossbar", analog=True, tiles=3)
    relu.ann.fused_into = FusedInto("conv")
    g.outputs = [relu.outputs[0]]
    return g


def test_annotations_survive() -> None:
    g = annotated()
    back = round_trip(g)
    conv, relu = back.nodes
    assert conv.ann.fused_activation == FusedActivation("Relu", "relu")
    assert conv.ann.quant == QuantSpec(4, 8, Granularity.PER_TENSOR, False)
    assert conv.ann.sparsity == SparsitySpec(0.5, True, 2)
    assert conv.ann.placement == Placement("analog-crossbar", True, 3)
    assert relu.ann.fused_into == FusedInto("conv")
    assert conv.inputs[2] is None
    verify(back)


def test_annotation_differences_are_seen() -> None:
    g = annotated()
    other = parse_graph(print_graph(g))
    other.nodes[0].ann.quant = QuantSpec(w_bits=8)
    assert graph_difference(g, other) is not None


def test_use_def_links_are_rebuilt() -> None:
    g = Graph()
    x = g.add_input("x", F4)
    a = g.add_node("Add", [x, x], name="add", output_names=["y"], output_types=[F4])
    g.outputs = [a.outputs[0]]
    back = round_trip(g)
    bx = back.inputs[0]
    assert bx.uses == [(back.nodes[0], 0), (back.nodes[0], 1)]
    assert back.nodes[0].outputs[0].producer is back.nodes[0]
    assert back.outputs[0] is back.nodes[0].outputs[0]


# Names that need quoting or look like other tokens.
ODD_NAMES = [
    "_",
    "123",
    "a b",
    "x::y",
    "é",
    "%p",
    "a,b",
    "@n",
    "#h",
    "{",
    "}",
    "-1",
    "inf",
    "nan",
    "inf.x",
    "nan.1",
    "graph",
    "dense",
    "f32[3]",
    "_0",
    "a.b",
    "elided",
    'q"uote',
    "back\\slash",
    "new\nline",
]


@pytest.mark.parametrize("name", ODD_NAMES, ids=[repr(n) for n in ODD_NAMES])
def test_odd_names_round_trip(name: str) -> None:
    g = Graph(name, {"": 17, name: 1})
    x = g.add_input(name, TensorType(DType.FLOAT, (name, 2)))
    k = g.add_constant(np.ones(2, np.float32), name + "_k")
    n = g.add_node(
        name,
        [x, k],
        name=name + "_node",
        domain=name,
        attrs={name: Attr.int(1)},
        output_names=[name + "_out"],
        output_types=[TensorType(DType.FLOAT, (name, 2))],
    )
    g.outputs = [n.outputs[0]]
    back = round_trip(g)
    assert back.nodes[0].op == name and back.nodes[0].domain == name and back.inputs[0].type.shape == (name, 2)


def test_types_round_trip() -> None:
    g = Graph()
    types = [
        TensorType(DType.FLOAT, None),
        TensorType(DType.FLOAT, ()),
        TensorType(DType.INT64, (None, 3)),
        TensorType(DType.BOOL, ("batch", None, 0)),
        TensorType(DType.BFLOAT16, (1,)),
        TensorType(DType.INT4, (2, 2)),
        TensorType(DType.FLOAT8E4M3FN, (5,)),
        TensorType(DType.STRING, (2,)),
        TensorType(DType.UNDEFINED, (1,)),
        TensorType(DType.FLOAT, ("?", "_", "1", "a b")),
    ]
    for i, t in enumerate(types):
        g.add_input(f"x{i}", t)
    g.add_input("untyped", None)
    g.outputs = list(g.inputs)
    back = round_trip(g)
    assert [v.type for v in back.inputs] == [*types, None]


def test_constants_round_trip_bit_exactly() -> None:
    g = Graph()
    arrays = {
        "specials": np.array([1.5, -0.0, np.inf, -np.inf, np.nan], np.float32),
        "tiny": np.array([1e-45, 3.4e38, 0.1], np.float32),
        "f64": np.array([0.1, 1 / 3], np.float64),
        "f16": np.arange(40, dtype=np.float16).reshape(2, 20),
        "big_f32": np.random.default_rng(0).standard_normal((7, 9)).astype(np.float32),
        "bool": np.array([True, False]),
        "scalar": np.array(3, np.int64),
        "i8": np.array([-128, 127], np.int8),
        "u64": np.array([0, 2**64 - 1], np.uint64),
        "empty": np.zeros((0, 3), np.float32),
        "bf16": np.array([1, 2, 3], dtype=ml_dtypes.bfloat16),
        "int4": np.array([1, -2, 7], dtype=ml_dtypes.int4),
        "f8": np.array([0.5, 2.0], dtype=ml_dtypes.float8_e4m3fn),
        "bytes_strings": np.array([b"ab", b"\xff\x00", b""], dtype=object),
        "text_strings": np.array(["x", "é", "€"], dtype=object),
    }
    for name, a in arrays.items():
        g.add_constant(a, name)
    g.outputs = list(g.constants.values())
    back = round_trip(g)
    for name, a in arrays.items():
        b = back.constants[name].const
        assert b.dtype == a.dtype and b.shape == a.shape
        if a.dtype != object:
            assert b.tobytes() == a.tobytes(), name
    # String tensors come back as the bytes ONNX stores.
    assert list(back.constants["bytes_strings"].const) == [b"ab", b"\xff\x00", b""]
    assert list(back.constants["text_strings"].const) == [b"x", "é".encode(), "€".encode()]


def test_attributes_round_trip() -> None:
    attrs = {
        "f_nan": Attr.float(float("nan")),
        "f_ninf": Attr.float(float("-inf")),
        "f_negzero": Attr.float(-0.0),
        "f_small": Attr.float(1e-30),
        "f_whole": Attr.float(3.0),
        "i": Attr.int(-5),
        "big": Attr.int(2**62),
        "s": Attr.string('he said "hi"\n\t\\'),
        "s_bytes": Attr(AttrKind.STRING, b"\xff\xfe"),
        "s_empty": Attr.string(""),
        "ints_empty": Attr.ints([]),
        "ints_one": Attr.ints([3]),
        "floats": Attr.floats([1.0, float("inf"), 2.5]),
        "floats_whole": Attr.floats([1.0, 2.0]),
        "floats_empty": Attr.floats([]),
        "strings": Attr(AttrKind.STRINGS, ("a", b"\xff")),
        "strings_empty": Attr(AttrKind.STRINGS, ()),
        "t": Attr.tensor(np.arange(30, dtype=np.float32)),
        "t_scalar": Attr.tensor(np.array(2.5, np.float32)),
        "t_strings": Attr.tensor(np.array([b"a", b"\x80"], dtype=object)),
        "ts": Attr(AttrKind.TENSORS, (np.arange(3, dtype=np.int64), np.array(2.5, np.float32))),
        "ts_empty": Attr(AttrKind.TENSORS, ()),
    }
    g = Graph()
    x = g.add_input("x", F4)
    n = g.add_node("Custom", [x], attrs=attrs, domain="com.example", name="n", output_names=["y"])
    g.outputs = [n.outputs[0]]
    back = round_trip(g)
    got = back.nodes[0].attrs
    assert set(got) == set(attrs)
    for key, a in attrs.items():
        assert got[key].kind is a.kind, key
        assert got[key] == a, key
    assert str(got["f_negzero"].value) == "-0.0"


def test_elided_weights_cannot_be_parsed_back() -> None:
    g = Graph()
    x = g.add_input("x", TensorType(DType.FLOAT, (1, 64)))
    w = g.add_constant(np.ones((64, 64), np.float32), "w")
    n = g.add_node("MatMul", [x, w], name="mm", output_names=["y"])
    g.outputs = [n.outputs[0]]
    text = print_graph(g, elide_weights=True)
    assert "elided" in text and len(text) < 1000
    with pytest.raises(ParseError, match=r"line 4: .*elided.*cannot be parsed back"):
        parse_graph(text)


def test_small_constants_are_not_elided() -> None:
    g = Graph()
    g.add_constant(np.array([1, 2, 3], np.int64), "shape")
    g.outputs = list(g.constants.values())
    text = print_graph(g, elide_weights=True)
    assert "dense<[1, 2, 3]>" in text
    round_trip(g)


GOOD = """graph g {
  opset {"": 17}
  input %x: f32[4]
  %y: f32[4] = Relu(%x) @relu
  output %y
}
"""


def test_the_documented_form_parses() -> None:
    g = parse_graph(GOOD)
    assert [n.op for n in g.nodes] == ["Relu"] and g.outputs[0].name == "y"
    assert print_graph(g) == GOOD


def test_comments_and_blank_lines_are_skipped() -> None:
    text = GOOD.replace("  input", "\n  // a comment\n  input")
    assert graph_difference(parse_graph(text), parse_graph(GOOD)) is None


@pytest.mark.parametrize(
    "line_no, bad_line",
    [
        (4, "  %y: f32[4] = Relu(%x @relu"),  # unclosed parenthesis
        (4, "  %y: f32[4] = Relu(%x) relu"),  # missing '@'
        (4, "  %y: f32[4] = Relu(%x) @relu extra"),  # trailing text
        (4, "  %y: f32[4] Relu(%x) @relu"),  # missing '='
        (4, "  %y: q77[4] = Relu(%x) @relu"),  # unknown element type
        (3, "  inputt %x: f32[4]"),  # unknown statement
        (3, "  input %x: f32[4] = 5"),  # trailing text
        (4, "  %y: f32[4] = Relu(%x) {alpha=} @relu"),  # missing attribute value
        (4, "  %y: f32[4] = Relu(%x) @relu #{not json"),  # broken annotations
        (4, '  %y: f32[4] = Relu(%x) @relu #{"nonsense": {}}'),  # unknown annotation
        (4, '  %y: f32[4] = Relu(%x) @relu #{"quant": {"w_granularity": "per-galaxy"}}'),  # bad enum
        (2, "  opset {17}"),  # broken opset JSON
        (2, '  doc "unterminated'),  # broken doc string
        (3, '  const %k: f32[2] = dense<b64"!!!">'),  # broken base64
        (3, "  const %k: f32[2] = dense<[1.0, 2.0, 3.0]>"),  # data does not fit the type
        (3, "  const %k: i64[2] = dense<[1.5, 2]>"),  # a float in integer data
        (3, '  input %"bad\\q": f32[4]'),  # an escape JSON does not know
        (4, "  %y: f32[4] = Relu(%nowhere) @relu"),  # undefined input
        (4, "  %x: f32[4] = Relu(%x) @relu"),  # value defined twice
    ],
)
def test_parse_error_names_the_line(line_no: int, bad_line: str) -> None:
    lines = GOOD.splitlines()
    lines[line_no - 1] = bad_line
    with pytest.raises(ParseError) as info:
        parse_graph("\n".join(lines))
    assert str(info.value).startswith(f"line {line_no}:"), str(info.value)
    assert "\n" not in str(info.value)


def test_parse_errors_without_a_line() -> None:
    with pytest.raises(ParseError, match="empty"):
        parse_graph("  \n\n")
    with pytest.raises(ParseError, match="not closed"):
        parse_graph(GOOD.rstrip().removesuffix("}"))
    with pytest.raises(ParseError, match="line 1"):
        parse_graph("grph g {\n}\n")
    with pytest.raises(ParseError, match="line 7: text after the end"):
        parse_graph(GOOD + "  output %y\n")
    with pytest.raises(ParseError, match="line 5"):
        parse_graph(GOOD.replace("output %y", "output %z"))
