"""Instruments attached to a PassRunner: Timing, PrintIR, DumpIR, Verify."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from onnx import helper

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph, Value
from hwnas.ir.text import print_graph
from hwnas.ir.types import DType, TensorType
from hwnas.ir.verifier import VerificationError
from hwnas.passes.base import PASSES, Pass, PassResult, register_pass
from hwnas.passes.instruments import DumpIR, PrintIR, Timing, Verify
from hwnas.passes.pipeline import PassRunner, parse_pipeline
from hwnas.passes.testing import build_model

CANONICALIZE_CHILDREN = ["fold-qdq", "eliminate-noops", "fold-constants", "fold-pad", "fold-batchnorm", "dce",
                         "refresh-shapes", "fuse-activations"]


def model() -> Graph:
    """x -> Identity -> Relu -> y, and a dead Sigmoid."""
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="identity"),
             helper.make_node("Relu", ["i"], ["y"], name="relu"),
             helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid")]
    return import_onnx(build_model(nodes, {"x": [2, 3]}, ["y"]))


def test_timing_records_every_nested_pass() -> None:
    timing = Timing()
    PassRunner([timing]).run(parse_pipeline("canonicalize,dce"), model())
    depth_name = [(depth, name) for depth, name, _, _ in timing.records]
    assert depth_name == [(0, "pipeline"), (1, "canonicalize"),
                          *[(2, n) for n in CANONICALIZE_CHILDREN * 2], (1, "dce")]
    assert all(seconds >= 0 for _, _, seconds, _ in timing.records)
    # The outer pipeline and canonicalize changed the graph; the last dce had nothing left.
    assert [changed for _, _, _, changed in timing.records][:2] == [True, True]
    assert timing.records[-1][3] is False
    assert set(timing.totals()) == {"pipeline", "canonicalize", "dce", *CANONICALIZE_CHILDREN}
    report = timing.report().splitlines()
    assert report[0].split() == ["pass", "seconds", "changed"]
    assert report[1].startswith("pipeline ") and report[1].endswith("yes")
    assert report[3].startswith("    fold-qdq ")
    assert len(report) == 1 + len(timing.records)


def test_print_ir_after_named_passes_only() -> None:
    stream = io.StringIO()
    result = PassRunner([PrintIR(frozenset({"dce"}), stream)]).run(parse_pipeline("eliminate-noops,dce"), model())
    assert stream.getvalue() == "// IR after dce\n" + print_graph(result.graph, elide_weights=True)
    assert "Sigmoid" not in stream.getvalue()


def test_print_ir_after_every_pass() -> None:
    stream = io.StringIO()
    PassRunner([PrintIR("all", stream)]).run(parse_pipeline("eliminate-noops,fold-constants{max_elements=8}"),
                                             model())
    headers = [ln for ln in stream.getvalue().splitlines() if ln.startswith("//")]
    assert headers == ["// IR after eliminate-noops", "// IR after fold-constants{max_elements=8}",
                       "// IR after eliminate-noops,fold-constants{max_elements=8}"]


def test_dump_ir_writes_numbered_files(tmp_path: Path) -> None:
    graph = model()
    before = print_graph(graph, elide_weights=True)
    folder = tmp_path / "dumps"
    result = PassRunner([DumpIR(folder)]).run(parse_pipeline("eliminate-noops,dce"), graph)
    assert sorted(p.name for p in folder.iterdir()) == [
        "000-input.txt", "001-eliminate-noops.txt", "002-dce.txt", "003-pipeline.txt"]
    assert (folder / "000-input.txt").read_text() == before
    after_noops = (folder / "001-eliminate-noops.txt").read_text()
    assert "Identity" not in after_noops and "Sigmoid" in after_noops
    assert (folder / "002-dce.txt").read_text() == print_graph(result.graph, elide_weights=True)


# -- Verify --------------------------------------------------------------------------------


@pytest.fixture
def breaking_pass() -> Iterator[type[Pass]]:
    """A registered pass that leaves the graph broken: a node reads a value from nowhere."""

    @register_pass
    @dataclass(frozen=True)
    class ReadFromNowhere(Pass):
        name = "test-read-from-nowhere"

        def run(self, graph: Graph) -> PassResult:
            t = TensorType(DType.FLOAT, (2, 3))
            graph.add_node("Neg", [Value("ghost", t)], name="haunted", output_names=["spooky"], output_types=[t])
            return PassResult(graph, True)

    yield ReadFromNowhere
    del PASSES[ReadFromNowhere.name]


def test_verify_names_the_pass_that_broke_the_graph(breaking_pass: type[Pass]) -> None:
    timing = Timing()
    pipeline = parse_pipeline("eliminate-noops,test-read-from-nowhere,dce")
    with pytest.raises(VerificationError) as e:
        PassRunner([Verify(), timing]).run(pipeline, model())
    assert str(e.value).startswith(
        "after pass 'test-read-from-nowhere': node 'haunted' (Neg): input 0 'ghost' is not defined in the graph")
    # It stopped right there: dce never ran.
    assert [name for _, name, _, _ in timing.records] == ["pipeline", "eliminate-noops", "test-read-from-nowhere"]


def test_verify_is_silent_on_correct_passes() -> None:
    result = PassRunner([Verify()]).run(parse_pipeline("canonicalize"), model())
    assert [n.op for n in result.graph.nodes] == ["Relu"]


def test_print_ir_single_name_matches_whole_names_only() -> None:
    import io

    from hwnas.passes.instruments import PrintIR

    stream = io.StringIO()
    printer = PrintIR("fold-constants", stream)
    assert printer.names == frozenset({"fold-constants"})
    assert "constants" not in printer.names  # a substring of the name does not match
