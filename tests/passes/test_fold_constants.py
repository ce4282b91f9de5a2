"""fold-constants: nodes computed from constants alone become constants."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph
from hwnas.ir.text import print_graph
from hwnas.passes.fold_constants import FoldConstants
from hwnas.passes.pipeline import parse_pipeline
from hwnas.passes.testing import build_model, fires, numeric, unchanged


def constant(name: str, values: list, dtype: type = np.float32) -> onnx.NodeProto:
    array = np.array(values, dtype)
    return helper.make_node("Constant", [], [name], name=f"make_{name}", value=onnx.numpy_helper.from_array(array))


def float_chain() -> onnx.ModelProto:
    nodes = [constant("c", [1, 2, 3]),
             helper.make_node("Add", ["c", "k"], ["s"], name="add"),
             helper.make_node("Mul", ["s", "s"], ["t"], name="square"),
             helper.make_node("Mul", ["x", "t"], ["y"], name="mul")]
    return build_model(nodes, {"x": [2, 3]}, ["y"], {"k": np.full(3, 0.5, np.float32)})


def shape_arithmetic() -> onnx.ModelProto:
    nodes = [constant("rows", [3], np.int64), constant("rest", [-1], np.int64),
             helper.make_node("Concat", ["rows", "rest"], ["shape"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
    return build_model(nodes, {"x": [2, 3]}, ["y"])


def big_fill(n: int) -> onnx.ModelProto:
    """ConstantOfShape([n]) + x: folding would store n numbers where the model has one."""
    fill = helper.make_node("ConstantOfShape", ["n"], ["filled"], name="fill",
                            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25]))
    add = helper.make_node("Add", ["x", "filled"], ["y"], name="add")
    return build_model([fill, add], {"x": [n]}, ["y"], {"n": np.array([n], np.int64)})


# -- golden --------------------------------------------------------------------------------


def test_golden_float_chain() -> None:
    result = fires(float_chain(), FoldConstants())
    # (1, 2, 3) + 0.5, squared; the intermediate constants are gone.
    assert print_graph(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[2,3]
  const %t_folded: f32[3] = dense<[2.25, 6.25, 12.25]>
  %y: f32[2,3] = Mul(%x, %t_folded) @mul
  output %y
}
"""


def test_golden_shape_arithmetic() -> None:
    result = fires(shape_arithmetic(), FoldConstants())
    assert print_graph(result.graph) == """\
graph g {
  opset {"": 17}
  input %x: f32[2,3]
  const %shape_folded: i64[2] = dense<[3, -1]>
  %y: f32[3,2] = Reshape(%x, %shape_folded) @reshape
  output %y
}
"""


def test_constants_it_did_not_free_stay() -> None:
    model = float_chain()
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(2, np.float32), "spare"))
    result = fires(model, FoldConstants())
    assert sorted(result.graph.constants) == ["spare", "t_folded"]  # removing %spare is dce's job


def test_max_elements_option() -> None:
    # 100 elements: folded under the default limit (1024), not under max_elements=64.
    result = fires(big_fill(100), FoldConstants())
    assert [n.op for n in result.graph.nodes] == ["Add"]
    small = parse_pipeline("fold-constants{max_elements=64}").passes[0]
    assert small == FoldConstants(max_elements=64)
    unchanged(big_fill(100), small)


# -- numeric -------------------------------------------------------------------------------


def test_numeric_float_chain() -> None:
    numeric(float_chain(), FoldConstants())


def test_numeric_shape_arithmetic() -> None:
    numeric(shape_arithmetic(), FoldConstants())


def test_numeric_large_fill_with_a_raised_limit() -> None:
    numeric(big_fill(2048), FoldConstants(max_elements=4096))


# -- negative ------------------------------------------------------------------------------


def test_result_that_would_grow_the_model() -> None:
    graph = import_onnx(big_fill(2048))
    unchanged(graph, FoldConstants())
    assert FoldConstants().skip_reason(graph.node_by_name("fill")) == \
        "result of 2048 elements would grow the model"


def test_input_not_a_constant() -> None:
    graph = import_onnx(float_chain())
    FoldConstants().run(graph)
    unchanged(graph, FoldConstants())
    assert FoldConstants().skip_reason(graph.node_by_name("mul")) == "an input is not a constant"


def test_constant_that_is_a_graph_output() -> None:
    graph = import_onnx(build_model([constant("y", [1.0, 2.0])], {}, ["y"]))
    unchanged(graph, FoldConstants())
    assert FoldConstants().skip_reason(graph.node_by_name("make_y")) == "output is a graph output"


def test_random_ops_are_not_folded() -> None:
    nodes = [helper.make_node("RandomNormal", [], ["r"], name="random", shape=[3], seed=1.0),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    graph = import_onnx(build_model(nodes, {"x": [3]}, ["y"]))
    unchanged(graph, FoldConstants())
    assert FoldConstants().skip_reason(graph.node_by_name("random")) == "op is not a deterministic ONNX op"


# -- one session per level -----------------------------------------------------------------


class OneByOne(FoldConstants):
    """The pass with every node evaluated in a session of its own (no level sessions)."""

    def _evaluate_by_level(self, graph: Graph) -> tuple[dict, None]:
        return {}, None


def levels_model() -> onnx.ModelProto:
    """Four foldable nodes in level 0 (one reads a Constant node), two in level 1, one in level 2;
    `bad` reads an index out of range, so onnxruntime fails it when `bad_index` is set."""
    k = np.arange(4, dtype=np.float32)
    nodes = [constant("c", [1, 2, 3, 4]),
             helper.make_node("Add", ["c", "k"], ["a"], name="a"),
             helper.make_node("Mul", ["k", "k"], ["b"], name="b"),
             helper.make_node("Neg", ["k"], ["n"], name="n"),
             helper.make_node("Gather", ["k", "idx"], ["g"], name="bad", axis=0),
             helper.make_node("Sub", ["a", "b"], ["d"], name="d"),
             helper.make_node("Div", ["b", "n"], ["q"], name="q"),
             helper.make_node("Add", ["d", "q"], ["e"], name="e"),
             helper.make_node("Mul", ["x", "e"], ["y0"], name="use_e"),
             helper.make_node("Mul", ["y0", "g"], ["y"], name="use_g")]
    return build_model(nodes, {"x": [4]}, ["y"], {"k": k, "idx": np.array([1, 0, 3, 2], np.int64)})


def test_levels_fold_as_node_by_node(monkeypatch: pytest.MonkeyPatch) -> None:
    import hwnas.passes.fold_constants as fc

    opened = []

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(kwargs.get("source"))
        return session(*args, **kwargs)

    session = fc.session
    monkeypatch.setattr(fc, "session", counting)
    by_level = FoldConstants().run(import_onnx(levels_model())).graph
    assert len(opened) == 3  # levels 0, 1, 2 (the Constant node needs no session)
    opened.clear()
    one_by_one = OneByOne().run(import_onnx(levels_model())).graph
    assert len(opened) == 7
    assert print_graph(by_level) == print_graph(one_by_one)
    assert [n.op for n in by_level.nodes] == ["Mul", "Mul"]
    numeric(levels_model(), FoldConstants())


def test_a_level_onnxruntime_cannot_run_is_folded_node_by_node() -> None:
    model = levels_model()
    idx = next(t for t in model.graph.initializer if t.name == "idx")
    idx.CopyFrom(onnx.numpy_helper.from_array(np.array([1, 0, 9, 2], np.int64), "idx"))  # 9: out of range
    by_level = FoldConstants().run(import_onnx(model)).graph
    one_by_one = OneByOne().run(import_onnx(model)).graph
    assert print_graph(by_level) == print_graph(one_by_one)
    assert [n.name for n in by_level.nodes] == ["bad", "use_e", "use_g"]  # only the failing node stays


# -- Shape and Size of values whose shape is all numbers -----------------------------------


def dynamic_expand() -> onnx.ModelProto:
    """y = x + expand(b, [Shape(x)[0], 4]) + Size(x), for x of shape [N, 4]: the shape arithmetic
    a dynamic-batch exporter writes (tf2onnx, jax2tf)."""
    nodes = [helper.make_node("Shape", ["x"], ["n"], name="batch", end=1),
             helper.make_node("Concat", ["n", "four"], ["target"], name="concat", axis=0),
             helper.make_node("Expand", ["b", "target"], ["bb"], name="expand"),
             helper.make_node("Size", ["x"], ["count"], name="count"),
             helper.make_node("Cast", ["count"], ["countf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "bb"], ["s"], name="add"),
             helper.make_node("Add", ["s", "countf"], ["y"], name="add_count")]
    return build_model(nodes, {"x": ["N", 4]}, ["y"],
                       {"four": np.array([4], np.int64), "b": np.arange(4, dtype=np.float32).reshape(1, 4)})


def test_shape_of_bound_dims_folds_and_the_arithmetic_after_it() -> None:
    from hwnas.backends.emit.onnx import to_onnx
    from hwnas.passes.bind_dims import bind
    from hwnas.passes.testing import run_model

    graph = import_onnx(dynamic_expand())
    expand = graph.node_by_name("expand")
    assert expand.outputs[0].type is not None and not expand.outputs[0].type.is_static  # [N, 4] before binding
    bind(graph, {"N": 3})
    graph = parse_pipeline("canonicalize").run(graph).graph
    ops = {n.op for n in graph.nodes}
    assert not ops & {"Shape", "Size", "Concat", "Expand", "Cast"}, ops  # all folded to constants
    assert all(n.outputs[0].type is not None and n.outputs[0].type.is_static for n in graph.nodes)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_model(to_onnx(graph), {"x": x})[0], run_model(dynamic_expand(), {"x": x})[0])


def test_shape_of_symbolic_dims_stays() -> None:
    graph = import_onnx(dynamic_expand())
    FoldConstants().run(graph)
    assert {"Shape", "Size"} <= {n.op for n in graph.nodes}


@pytest.mark.parametrize(("start", "end"), [(None, None), (1, None), (-2, None), (0, -1), (-9, 9), (2, 1), (-1, -3)])
def test_static_shape_slices_as_onnxruntime_does(start: int | None, end: int | None) -> None:
    from hwnas.passes.fold_constants import static_shape
    from hwnas.passes.testing import run_model

    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape", **attrs),
             helper.make_node("Identity", ["s"], ["y"], name="out")]
    model = build_model(nodes, {"x": [2, 3, 5, 7]}, ["y"])
    graph = import_onnx(model)
    want = run_model(model, {"x": np.zeros((2, 3, 5, 7), np.float32)})[0]
    np.testing.assert_array_equal(static_shape(graph.node_by_name("shape")), want)
