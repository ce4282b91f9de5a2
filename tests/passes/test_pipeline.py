"""Pipeline specs, the pass registry, the fixpoint combinator and plugins."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from onnx import helper

from hwnas.errors import PipelineError
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph
from hwnas.passes import registered_passes
from hwnas.passes.base import PASSES, Pass, PassResult, load_plugin, register_pass
from hwnas.passes.canonicalize import Canonicalize
from hwnas.passes.dce import DeadCodeElimination
from hwnas.passes.eliminate_noops import EliminateNoops
from hwnas.passes.fold_batchnorm import FoldBatchNorm
from hwnas.passes.fold_constants import FoldConstants
from hwnas.passes.instruments import Timing
from hwnas.passes.pipeline import Fixpoint, PassRunner, Pipeline, parse_pipeline
from hwnas.passes.testing import build_model

# -- spec round trip -----------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    "canonicalize,fold-batchnorm",
    "fold-constants{max_elements=64},dce",
    "fixpoint{max_iterations=3}(eliminate-noops,dce)",
    "fixpoint(fixpoint{max_iterations=2}(dce),canonicalize{max_iterations=5})",
])
def test_spec_round_trip(spec: str) -> None:
    assert parse_pipeline(spec).spec() == spec


def test_specs_parse_to_pass_instances() -> None:
    assert parse_pipeline("canonicalize,fold-batchnorm") == Pipeline((Canonicalize(), FoldBatchNorm()))
    assert parse_pipeline("fold-constants{max_elements=64},dce").passes == (
        FoldConstants(max_elements=64), DeadCodeElimination())
    assert parse_pipeline("fixpoint{max_iterations=3}(eliminate-noops,dce)").passes == (
        Fixpoint((EliminateNoops(), DeadCodeElimination()), max_iterations=3),)


def test_spacing_and_default_options_normalize() -> None:
    spec = " fold-constants { max_elements = 1024 } , fixpoint ( dce ) "
    assert parse_pipeline(spec).spec() == "fold-constants,fixpoint(dce)"


def test_every_built_in_pass_is_registered() -> None:
    assert {"canonicalize", "dce", "eliminate-noops", "fixpoint", "fold-batchnorm", "fold-constants",
            "fuse-activations", "refresh-shapes"} <= set(registered_passes())


# -- spec errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ("dce,fold-constant", "unknown pass 'fold-constant' in pipeline 'dce,fold-constant' (known passes: "),
    ("dce{ratio=0.5}", "pass 'dce' has no option 'ratio' (options: none)"),
    ("fold-constants{maxelements=64}", "pass 'fold-constants' has no option 'maxelements' (options: max_elements)"),
    ("fold-constants{max_elements=many}", "pass 'fold-constants': option 'max_elements' must be int, not 'many'"),
    ("fixpoint{max_iterations=2.5}(dce)", "pass 'fixpoint': option 'max_iterations' must be int, not '2.5'"),
    ("dce(fold-constants)", "pass 'dce' takes no nested passes"),
    ("fixpoint(dce", "ends too early"),
    ("dce)", "unexpected ')'"),
    ("dce;fold-constants", "unexpected character ';'"),
    ("", "empty pipeline"),
])
def test_spec_errors_name_the_pass_and_option(spec: str, message: str) -> None:
    with pytest.raises(PipelineError) as e:
        parse_pipeline(spec)
    assert message in str(e.value)


def test_unknown_pass_lists_the_known_ones() -> None:
    with pytest.raises(PipelineError, match=r"known passes: .*\bdce\b.*\bfold-batchnorm\b"):
        parse_pipeline("dcee")


# -- registry ------------------------------------------------------------------------------


def test_register_pass_rejects_a_mutable_dataclass() -> None:
    # (A mutable dataclass cannot derive from the frozen Pass at all; this one duck-types it.)
    @dataclass
    class Mutable:
        name = "test-mutable"
        ratio: float = 0.5

    with pytest.raises(TypeError, match="pass Mutable must be a frozen dataclass"):
        register_pass(Mutable)  # type: ignore[arg-type]
    assert "test-mutable" not in PASSES


def test_register_pass_rejects_a_subclass_that_is_not_itself_a_dataclass() -> None:
    # It inherits Pass's dataclass parameters, but its option would not be a field.
    class Plain(Pass):
        name = "test-plain"
        ratio: float = 0.5

    with pytest.raises(TypeError, match="pass Plain must be a frozen dataclass"):
        register_pass(Plain)
    assert "test-plain" not in PASSES


def test_register_pass_rejects_a_taken_name() -> None:
    @dataclass(frozen=True)
    class AnotherDce(Pass):
        name = "dce"

    with pytest.raises(TypeError, match="pass name 'dce' is taken by DeadCodeElimination"):
        register_pass(AnotherDce)
    assert PASSES["dce"] is DeadCodeElimination


def test_register_pass_rejects_a_name_that_is_not_kebab_case() -> None:
    @dataclass(frozen=True)
    class Shouty(Pass):
        name = "Fold BN"

    with pytest.raises(TypeError, match="kebab-case"):
        register_pass(Shouty)


# -- fixpoint ------------------------------------------------------------------------------


@pytest.fixture
def always_changed() -> Iterator[type[Pass]]:
    """A registered pass that claims a change every time (to test max_iterations)."""

    @register_pass
    @dataclass(frozen=True)
    class AlwaysChanged(Pass):
        name = "test-always-changed"

        def run(self, graph: Graph) -> PassResult:
            return PassResult(graph, True)

    yield AlwaysChanged
    del PASSES[AlwaysChanged.name]


def noops_model() -> Graph:
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="identity"),
             helper.make_node("Transpose", ["i"], ["t"], name="transpose", perm=[1, 0]),
             helper.make_node("Transpose", ["t"], ["u"], name="transpose_back", perm=[1, 0]),
             helper.make_node("Relu", ["u"], ["y"], name="relu")]
    return import_onnx(build_model(nodes, {"x": [2, 3]}, ["y"]))


def runs_of(timing: Timing, name: str) -> list[bool]:
    """The `changed` of each run of the pass `name`."""
    return [changed for _, n, _, changed in timing.records if n == name]


def test_fixpoint_stops_when_a_round_changes_nothing() -> None:
    timing = Timing()
    result = PassRunner([timing]).run(parse_pipeline("fixpoint{max_iterations=3}(eliminate-noops,dce)"), noops_model())
    assert result.changed is True
    assert [n.op for n in result.graph.nodes] == ["Relu"]
    # Round 1 bypasses the noops and removes the dead Transpose; round 2 finds nothing.
    assert runs_of(timing, "eliminate-noops") == [True, False]
    assert runs_of(timing, "dce") == [True, False]
    assert runs_of(timing, "fixpoint") == [True]


def test_fixpoint_on_a_graph_with_nothing_to_do() -> None:
    timing = Timing()
    graph = noops_model()
    Pipeline((EliminateNoops(), DeadCodeElimination())).run(graph)
    result = PassRunner([timing]).run(parse_pipeline("fixpoint(eliminate-noops,dce)"), graph)
    assert result.changed is False
    assert runs_of(timing, "eliminate-noops") == [False]


def test_fixpoint_stops_at_max_iterations(always_changed: type[Pass]) -> None:
    timing = Timing()
    pipeline = parse_pipeline("fixpoint{max_iterations=3}(eliminate-noops,test-always-changed)")
    assert PassRunner([timing]).run(pipeline, noops_model()).changed is True
    assert runs_of(timing, "test-always-changed") == [True] * 3
    assert runs_of(timing, "eliminate-noops") == [True, False, False]


def test_composite_runs_without_a_runner() -> None:
    result = parse_pipeline("fixpoint(eliminate-noops,dce)").run(noops_model())
    assert result.changed is True
    assert [n.op for n in result.graph.nodes] == ["Relu"]


# -- plugins -------------------------------------------------------------------------------

PLUGIN = '''
from __future__ import annotations

from dataclasses import dataclass

from hwnas.passes import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class RenameGraph(Pass):
    """Sets the graph's name (a plugin pass for the tests)."""

    name = "test-plugin-rename"
    to: str = "renamed"
    times: int = 1

    def run(self, graph):
        changed = graph.name != self.to
        graph.name = self.to
        return PassResult(graph, changed)
'''


@pytest.fixture
def plugin_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "rename_plugin.py"
    path.write_text(PLUGIN)
    yield path
    PASSES.pop("test-plugin-rename", None)
    sys.modules.pop("hwnas_plugin_rename_plugin", None)


def test_load_plugin_makes_its_pass_usable(plugin_file: Path) -> None:
    with pytest.raises(PipelineError, match="unknown pass 'test-plugin-rename'"):
        parse_pipeline("test-plugin-rename")
    load_plugin(plugin_file)
    pipeline = parse_pipeline("dce,test-plugin-rename{to=small,times=2}")
    assert pipeline.spec() == "dce,test-plugin-rename{to=small,times=2}"
    result = pipeline.run(noops_model())
    assert result.changed is True and result.graph.name == "small"
    with pytest.raises(PipelineError, match="option 'times' must be int, not 'x'"):
        parse_pipeline("test-plugin-rename{times=x}")


def test_load_plugin_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"no_such_plugin\.py: plugin file not found"):
        load_plugin(tmp_path / "no_such_plugin.py")


def test_load_plugin_that_raises(tmp_path: Path) -> None:
    path = tmp_path / "broken_plugin.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PipelineError, match=r"broken_plugin\.py: plugin failed to load: RuntimeError: boom"):
        load_plugin(path)
    assert "hwnas_plugin_broken_plugin" not in sys.modules


def test_load_plugin_with_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "typo_plugin.py"
    path.write_text("def run(:\n")
    with pytest.raises(PipelineError, match=r"typo_plugin\.py: plugin failed to load: SyntaxError"):
        load_plugin(path)


def test_load_plugin_that_registers_then_raises_leaves_no_pass(tmp_path: Path) -> None:
    path = tmp_path / "half_plugin.py"
    path.write_text(
        "from dataclasses import dataclass\n"
        "from hwnas.passes import Pass, PassResult, register_pass\n"
        "@register_pass\n@dataclass(frozen=True)\n"
        "class Half(Pass):\n    name = 'test-half-registered'\n"
        "    def run(self, graph):\n        return PassResult(graph, False)\n"
        "raise RuntimeError('after registering')\n"
    )
    with pytest.raises(PipelineError, match="after registering"):
        load_plugin(path)
    assert "test-half-registered" not in registered_passes()
