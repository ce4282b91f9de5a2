"""`If` nodes that the input dims decide are inlined at import; those that input values decide
are refused with the input named. Checked against onnxruntime running the original model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.emit.onnx import to_onnx
from hwnas.cli import main
from hwnas.errors import ModelLoadError, UnsupportedModelError
from hwnas.frontends.onnx import import_onnx


def _branch(name: str, op: str, out: str, inner: list[onnx.NodeProto] | None = None,
            inits: list[onnx.TensorProto] | None = None) -> onnx.GraphProto:
    """A branch that reads the outer `x`: OP(x) + b, with its own initializer (`NAME_b`) and
    an inner value `NAME_t`; its node names ("act", "bias") are those of the other branch too."""
    nodes = [helper.make_node(op, ["x"], [f"{name}_t"], name="act"), *(inner or []),
             helper.make_node("Add", [f"{name}_t", f"{name}_b"], [out], name="bias")]
    b = numpy_helper.from_array(np.full(4, 0.5 if op == "Relu" else -0.25, np.float32), f"{name}_b")
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                             initializer=[b, *(inits or [])])


def dims_model(nested: bool = False) -> onnx.ModelProto:
    """y = 2 * (N == 1 ? relu(x) + 0.5 : sigmoid(x) - 0.25) + t, for x of shape [N, 4]; with
    `nested`, the then-branch holds a further If on x's element count (Size: dims only)."""
    inner: list[onnx.NodeProto] = []
    if nested:
        small = helper.make_node("Less", ["size", "eight"], ["is_small"])
        deeper = helper.make_node("If", ["is_small"], ["u"], name="deeper",
                                  then_branch=_branch("deep_then", "Neg", "u_then"),
                                  else_branch=_branch("deep_else", "Abs", "u_else"))
        inner = [helper.make_node("Size", ["x"], ["size"]), small, deeper,
                 helper.make_node("Mul", ["then_t", "u"], ["t2"])]
    then = _branch("then", "Relu", "r", inner)
    if nested:
        then.node[-1].input[0] = "t2"
        then.initializer.append(numpy_helper.from_array(np.array(8, np.int64), "eight"))
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Equal", ["n", "one"], ["cond"]),
        helper.make_node("If", ["cond"], ["z"], name="by_batch", then_branch=then,
                         else_branch=_branch("else", "Sigmoid", "s")),
        helper.make_node("Relu", ["x"], ["t"], name="outer_t"),
        helper.make_node("Mul", ["z", "two"], ["z2"]),
        helper.make_node("Add", ["z2", "t"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    g = helper.make_graph(nodes, "dims_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(("n", "branch"), [(1, "then"), (3, "else")])
def test_the_branch_the_dims_select_is_inlined(n: int, branch: str) -> None:
    model = dims_model()
    with pytest.warns(UserWarning, match=rf"dims N={n} select: 'by_batch' \({branch} branch\)"):
        graph = import_onnx(model, dims={"N": n})
    assert not any(node.op == "If" for node in graph.nodes)
    assert any(c.endswith(f"{branch}_b") for c in graph.constants), "the branch's initializer was kept"
    x = np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(to_onnx(graph), x), _run(model, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 3])
def test_a_nested_if_is_inlined_in_a_second_round(n: int) -> None:
    model = dims_model(nested=True)
    with pytest.warns(UserWarning, match="'by_batch'"):
        graph = import_onnx(model, dims={"x": (n, 4)})
    assert not any(node.op == "If" for node in graph.nodes)
    x = np.random.default_rng(1).standard_normal((n, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(to_onnx(graph), x), _run(model, x), rtol=1e-6, atol=1e-6)


def test_dims_not_given_are_taken_as_one_and_said() -> None:
    with pytest.warns(UserWarning, match=r"taken as 1: N\) select: 'by_batch' \(then branch\).*these dims only"):
        graph = import_onnx(dims_model(), dims={})
    assert not any(node.op == "If" for node in graph.nodes)


def test_without_dims_an_if_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A caller that cannot say the dims (`import_onnx` without `dims`, `hwnas opt`) would get a
    graph specialized for 1s that passes for a dynamic one: refused, pointing to --dims."""
    with pytest.raises(UnsupportedModelError, match=r"'by_batch' \(If\): .*--dims"):
        import_onnx(dims_model())
    path = tmp_path / "dims_if.onnx"
    onnx.save(dims_model(), path)
    assert main(["opt", str(path), "-p", "canonicalize", "-o", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dims" in err[0], err
    assert not (tmp_path / "out.onnx").exists()


def test_a_condition_on_input_values_is_refused_naming_the_input() -> None:
    model = dims_model()
    g = model.graph
    g.input.append(helper.make_tensor_value_info("flag", TensorProto.INT64, []))
    g.node[2].input[:] = ["n", "flag"]  # N == flag: decided by a value only known at run time
    with pytest.raises(UnsupportedModelError, match=r"'by_batch' \(If\): .*values of input 'flag'") as e:
        import_onnx(model, dims={"N": 1})
    assert "\n" not in str(e.value)


def test_cost_prices_the_inlined_branch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`hwnas cost --dims` chooses the branch: the sigmoid branch at N=3, the relu at N=1."""
    path = tmp_path / "dims_if.onnx"
    onnx.save(dims_model(), path)
    ops = {}
    for n in (1, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(["cost", str(path), "-t", "host-cpu", "--dims", f"N={n}", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        ops[n] = {node["node"]: node["op"] for node in report["targets"]["host-cpu"]["nodes"]}
    assert ops[1]["by_batch/act"] == "Relu" and "Sigmoid" not in ops[1].values()
    assert ops[3]["by_batch/act"] == "Sigmoid"


def test_a_malformed_if_is_one_line() -> None:
    model = dims_model()
    node = model.graph.node[3]
    del node.attribute[1]  # no else_branch
    with pytest.raises(ModelLoadError, match=r"'by_batch' \(If\): needs .*else_branch") as e:
        import_onnx(model, dims={"N": 1})
    assert "\n" not in str(e.value)


def test_a_constant_condition_needs_no_dims_and_no_warning() -> None:
    """An If on a constant (an exporter's flag) is the model itself: inlined without dims, silently."""
    model = dims_model()
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.array(False), "flag"))
    g.node[3].input[0] = "flag"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = import_onnx(model)
    assert not any(node.op == "If" for node in graph.nodes)
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(to_onnx(graph), x), _run(model, x), rtol=1e-6, atol=1e-6)
