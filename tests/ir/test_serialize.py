"""JSON (+ .npz) serialization: save -> load gives an equal graph on real models and on
every node test model hwnas imports; annotations, odd data and damaged files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.annotations import FusedActivation, FusedInto, Granularity, Placement, QuantSpec, SparsitySpec
from hwnas.ir.attributes import Attr, AttrKind
from hwnas.ir.equality import graph_difference
from hwnas.ir.graph import Graph
from hwnas.ir.serialize import from_json, load_json, save_json, to_json
from hwnas.ir.text import ParseError, print_graph
from hwnas.ir.types import DType, TensorType
from hwnas.ir.verifier import verify

from .sweep import assert_all_round_trip


def round_trip(graph: Graph, path: Path) -> Graph:
    json_path, npz_path = save_json(graph, path)
    assert json_path == path and npz_path == path.with_suffix(".npz")
    assert json_path.is_file() and npz_path.is_file()
    back = load_json(path)
    assert graph_difference(graph, back) is None, graph_difference(graph, back)
    assert print_graph(back) == print_graph(graph)
    return back


def test_light_models_round_trip(light_model: str, tmp_path: Path) -> None:
    back = round_trip(import_onnx(light_model), tmp_path / "model.json")
    verify(back)


def test_every_importable_node_test_model_round_trips(
    imported_cases: tuple, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    path = tmp_path / "g.json"

    def check(graph: Graph) -> str | None:
        save_json(graph, path)
        return graph_difference(graph, load_json(path))

    assert_all_round_trip(imported_cases, check, "JSON round trip", record_property)


def test_in_memory_round_trip() -> None:
    g = Graph("m")
    x = g.add_input("x", TensorType(DType.FLOAT, ("N", 4)))
    k = g.add_constant(np.arange(4, dtype=np.float32), "k")
    n = g.add_node("Add", [x, k], name="add", output_names=["y"], output_types=[TensorType(DType.FLOAT, ("N", 4))])
    g.outputs = [n.outputs[0]]
    doc, arrays = to_json(g)
    json.dumps(doc)  # plain JSON: nothing numpy in it
    assert doc["format"] == "hwnas-graph" and doc["version"] == 1
    assert graph_difference(g, from_json(doc, arrays)) is None


def test_annotations_survive(tmp_path: Path) -> None:
    g = Graph("annotated")
    x = g.add_input("x", TensorType(DType.FLOAT, (1, 3, 8, 8)))
    w = g.add_constant(np.ones((4, 3, 3, 3), np.float32), "w")
    conv = g.add_node("Conv", [x, w, None], name="conv", output_names=["c"])
    relu = g.add_node("Relu", [conv.outputs[0]], name="relu", output_names=["r"])
    conv.ann.fused_activation = FusedActivation("Relu", "relu")
    conv.ann.quant = QuantSpec(w_bits=4, a_bits=None, w_granularity=Granularity.PER_TENSOR, symmetric=False)
    conv.ann.sparsity = SparsitySpec(weight_sparsity=0.25, structured=False)
    conv.ann.placement = Placement("mcu")
    relu.ann.fused_into = FusedInto("conv")
    g.outputs = [relu.outputs[0]]
    back = round_trip(g, tmp_path / "a.json")
    bconv, brelu = back.nodes
    assert bconv.ann.fused_activation == FusedActivation("Relu", "relu")
    assert bconv.ann.quant == QuantSpec(4, None, Granularity.PER_TENSOR, False)
    assert bconv.ann.sparsity == SparsitySpec(0.25, False, None)
    assert bconv.ann.placement == Placement("mcu", False, None)
    assert brelu.ann.fused_into == FusedInto("conv")
    assert bconv.inputs[2] is None


def test_odd_data_round_trips(tmp_path: Path) -> None:
    g = Graph('odd "name"', {"": 18, "com.example": 2})
    g.doc = "line 1\nline 2"
    arrays = {
        "specials": np.array([np.nan, -0.0, np.inf], np.float32),
        "bf16": np.array([1.5, -2], dtype=ml_dtypes.bfloat16),
        "int4": np.array([[1, -8], [7, 0]], dtype=ml_dtypes.int4),
        "f8": np.array([0.5], dtype=ml_dtypes.float8_e5m2),
        "scalar": np.array(True),
        "empty": np.zeros((2, 0), np.int32),
        "strings": np.array([[b"a", b"\xff"], [b"", "é".encode()]], dtype=object),
    }
    for name, a in arrays.items():
        g.add_constant(a, name)
    x = g.add_input("x y", TensorType(DType.FLOAT, (None, "batch size")))
    attrs = {
        "f": Attr.float(float("nan")),
        "fi": Attr.float(float("-inf")),
        "fl": Attr.floats([float("inf"), -0.0]),
        "s": Attr(AttrKind.STRING, b"\xff"),
        "ss": Attr(AttrKind.STRINGS, ("ok", b"\xfe")),
        "i": Attr.ints([]),
        "t": Attr.tensor(np.array([b"x"], dtype=object)),
        "ts": Attr(AttrKind.TENSORS, (np.ones(3, np.float16), np.array(1, ml_dtypes.int4))),
    }
    n = g.add_node(
        "Odd",
        [x, None, *g.constants.values()],
        n_outputs=2,
        attrs=attrs,
        domain="com.example",
        name="odd",
        output_names=["o1", "o2"],
        output_types=[None, TensorType(DType.INT4, None)],
    )
    g.outputs = [n.outputs[1], g.constants["scalar"]]
    back = round_trip(g, tmp_path / "odd.json")
    for name, a in arrays.items():
        b = back.constants[name].const
        assert b.dtype == a.dtype and b.shape == a.shape, name
    assert back.constants["strings"].const.tolist() == [[b"a", b"\xff"], [b"", "é".encode()]]
    assert back.nodes[0].attrs == attrs


def test_files_appear_whole_or_not_at_all(tmp_path: Path) -> None:
    g = Graph()
    g.add_constant(np.ones(3, np.float32), "k")
    g.outputs = list(g.constants.values())
    save_json(g, tmp_path / "g.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json", "g.npz"]  # no temporary files left


def test_missing_weights_file(tmp_path: Path) -> None:
    g = Graph()
    g.add_constant(np.ones(3, np.float32), "k")
    g.outputs = list(g.constants.values())
    path, weights = save_json(g, tmp_path / "g.json")
    weights.unlink()
    with pytest.raises(ParseError, match="g.npz"):
        load_json(path)


def test_damaged_weights_file(tmp_path: Path) -> None:
    g = Graph()
    g.add_constant(np.ones(3, np.float32), "k")
    g.outputs = list(g.constants.values())
    path, weights = save_json(g, tmp_path / "g.json")
    weights.write_bytes(b"not a zip file")
    with pytest.raises(ParseError, match="g.npz"):
        load_json(path)


def test_not_a_graph_document(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else"}))
    np.savez(tmp_path / "other.npz")
    with pytest.raises(ParseError, match="not an hwnas-graph document"):
        load_json(path)


def test_node_reading_an_undefined_value(tmp_path: Path) -> None:
    g = Graph()
    x = g.add_input("x", None)
    n = g.add_node("Relu", [x], name="relu", output_names=["y"])
    g.outputs = [n.outputs[0]]
    doc, arrays = to_json(g)
    doc["nodes"][0]["inputs"] = ["nowhere"]
    with pytest.raises(ParseError, match="'relu' reads 'nowhere'"):
        from_json(doc, arrays)
