"""The ONNX frontend on bad input: every failure is a HwnasError with one line naming the
file. And the good paths that are easy to get wrong: external data, opset upgrades."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.emit.onnx import to_onnx
from hwnas.errors import HwnasError, ModelLoadError, UnsupportedModelError
from hwnas.frontends.onnx import import_onnx, load_model
from hwnas.ir.verifier import verify

SESSION_OPTIONS = ort.SessionOptions()
SESSION_OPTIONS.log_severity_level = 4
SESSION_OPTIONS.intra_op_num_threads = 1  # tiny models: threads cost more than they save


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), SESSION_OPTIONS, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_one_line_naming(error: BaseException, path: Path) -> str:
    message = str(error)
    assert isinstance(error, HwnasError)
    assert str(path) in message, message
    assert "\n" not in message and len(message) < 500, message
    return message


def expect_error(path: Path, kind: type[HwnasError] = HwnasError, loaders=(import_onnx, load_model)) -> list[str]:
    """Each loader raises `kind` with one line naming `path`; returns the messages."""
    messages = []
    for load in loaders:
        with pytest.raises(kind) as info:
            load(path)
        messages.append(assert_one_line_naming(info.value, path))
        with pytest.raises(kind):
            load(str(path))  # a str path as well as a Path
    return messages


def small_model(opset: int = 17) -> onnx.ModelProto:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# -- files that are not ONNX models --------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    (message, _) = expect_error(tmp_path / "nowhere.onnx", ModelLoadError)
    assert "no such file" in message


def test_directory(tmp_path: Path) -> None:
    (message, _) = expect_error(tmp_path, ModelLoadError)
    assert "directory" in message


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    expect_error(path, ModelLoadError)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    expect_error(path, ModelLoadError)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("graph main {\n  this is not protobuf\n}\n")
    expect_error(path, ModelLoadError)


def test_truncated_real_model(tmp_path: Path, light_model: str) -> None:
    data = Path(light_model).read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, ModelLoadError)


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "locked.onnx"
    onnx.save(small_model(), str(path))
    path.chmod(0)
    expect_error(path, ModelLoadError)


# -- ONNX files hwnas cannot take ---------------------------------------------------------


def test_undefined_node_input(tmp_path: Path) -> None:
    node = helper.make_node("Add", ["x", "ghost"], ["y"], name="add")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "undefined.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "'add'" in message and "'ghost'" in message


def test_undefined_graph_output(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "no_output.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "'z'" in message


def test_value_defined_twice(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "twice.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "'b'" in message and "'y'" in message


def test_cycle(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Add", ["x", "c"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["c"], name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "cycle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "cycle" in message and "first" in message and "second" in message


def _saved(tmp_path: Path, nodes: list[onnx.NodeProto], *, initializer: Sequence[onnx.TensorProto] = (),
           x_dims: list[int] | None = None, opset: int = 17) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims or [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializer))
    path = tmp_path / "bad.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString())
    return path


# Each is a node onnx's checker rejects: refused when read, with the node named, rather than
# imported and failing later, when the emitted model meets the checker.
SCHEMA_CASES = {
    "string kernel_shape": (helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape="3"),
                            "node 'pool' (MaxPool): Mismatched attribute type in 'pool : kernel_shape'"),
    "float axis": (helper.make_node("Softmax", ["x"], ["y"], name="soft", axis=1.0),
                   "node 'soft' (Softmax): Mismatched attribute type"),
    "attribute the op lacks": (helper.make_node("Relu", ["x"], ["y"], name="act", alpha=0.1),
                               "node 'act' (Relu): Unrecognized attribute: alpha for operator Relu"),
    "required attribute missing": (helper.make_node("MaxPool", ["x"], ["y"], name="pool"),
                                   "node 'pool' (MaxPool): Required attribute 'kernel_shape' is missing"),
    "too many inputs": (helper.make_node("Relu", ["x", "x"], ["y"], name="act"),
                        "node 'act' (Relu): Node(act) with schema(::Relu:14) has input size 2 not in range"),
    "op onnx lacks": (helper.make_node("Frobnicate", ["x"], ["y"], name="frob"),
                      "node 'frob' (Frobnicate): No Op registered for Frobnicate with domain_version of 17"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_node_that_fails_its_schema(case: str, tmp_path: Path) -> None:
    node, phrase = SCHEMA_CASES[case]
    path = _saved(tmp_path, [node])
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert phrase in message, message


def test_custom_domain_ops_are_not_checked_against_onnx(tmp_path: Path) -> None:
    node = helper.make_node("Mystery", ["x"], ["y"], name="m", domain="com.example", anything=[1, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    g = import_onnx(model)
    assert g.nodes[0].qualified_op == "com.example::Mystery"
    onnx.checker.check_model(to_onnx(g))


@pytest.mark.parametrize("version", [0, 999])
def test_opset_onnx_does_not_know(version: int, tmp_path: Path) -> None:
    path = _saved(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], opset=version)
    (message,) = expect_error(path, UnsupportedModelError, loaders=(import_onnx,))
    assert f"opset {version} of domain 'ai.onnx' is not one onnx" in message


def test_node_reading_its_own_output_is_a_cycle(tmp_path: Path) -> None:
    path = _saved(tmp_path, [helper.make_node("Add", ["x", "y"], ["y"], name="loop")])
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "cycle through loop" in message


def test_initializer_of_undefined_type(tmp_path: Path) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    w.data_type = 0
    path = _saved(tmp_path, [helper.make_node("Add", ["x", "w"], ["y"])], initializer=[w], x_dims=[2])
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "initializer 'w': tensor 'w' does not hold its type's data" in message


def test_initializer_whose_data_does_not_fit_its_dims(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones(4, np.float32), "w")
    w.dims[0] = 8
    path = _saved(tmp_path, [helper.make_node("Add", ["x", "w"], ["y"])], initializer=[w], x_dims=[8])
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "tensor 'w' does not hold its type's data" in message


def test_input_with_a_negative_dim(tmp_path: Path) -> None:
    path = _saved(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], x_dims=[1, -5])
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "input 'x' has a negative dimension" in message


def test_minus_one_is_a_dynamic_dim_as_paddle2onnx_writes_it(tmp_path: Path) -> None:
    from hwnas.backends.measure import random_inputs

    path = _saved(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], x_dims=[-1, 3, 4])
    model = load_model(path)
    graph = import_onnx(model)
    assert graph.inputs[0].type.shape == (None, 3, 4)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1  # the caller's model untouched
    assert import_onnx(path).inputs[0].type.shape == (None, 3, 4)  # read from a file: changed in place
    sess = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    x = -np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.zeros_like(x))
    assert random_inputs(model)["x"].shape == (1, 3, 4)


def test_name_that_is_not_utf8(tmp_path: Path) -> None:
    data = _saved(tmp_path, [helper.make_node("Relu", ["x"], ["yy"], name="act"),
                             helper.make_node("Neg", ["yy"], ["y"], name="neg")]).read_bytes()
    path = tmp_path / "bad.onnx"
    path.write_bytes(data.replace(b"yy", b"y\xff"))  # protobuf hands out such a string as bytes
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "node 'act' (Relu): a name in it is not UTF-8 text" in message


@pytest.mark.parametrize("named", ["initializer", "output"])
def test_a_name_that_is_not_utf8_is_said_before_an_initializers_data(named: str, tmp_path: Path) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    w.data_type = 0  # an earlier initializer whose data cannot be read
    b_name, y_name = ("bb", "y") if named == "initializer" else ("b", "yy")  # the doubled letter is made bad
    b = numpy_helper.from_array(np.ones(2, np.float32), b_name)
    nodes = [helper.make_node("Add", ["x", "w"], ["t"]), helper.make_node("Add", ["t", b_name], [y_name])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=[w, b]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "bad.onnx"
    twice = (b_name if named == "initializer" else y_name).encode()
    path.write_bytes(model.SerializeToString().replace(twice, twice[:1] + b"\xff"))
    (message,) = expect_error(path, ModelLoadError, loaders=(import_onnx,))
    assert "of a graph input, output or initializer is not UTF-8 text" in message, message


def test_nodes_out_of_order_are_sorted(tmp_path: Path) -> None:
    nodes = [helper.make_node("Neg", ["a"], ["y"], name="second"), helper.make_node("Relu", ["x"], ["a"], name="first")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    g = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.name for n in g.nodes] == ["first", "second"]
    verify(g)


def test_opset_that_cannot_be_converted(tmp_path: Path) -> None:
    # Upsample-1 (opset 6) requires width_scale and height_scale; without them onnx's
    # version converter cannot bring the model to opset 17.
    node = helper.make_node("Upsample", ["x"], ["y"], mode="nearest")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)]), str(path))
    load_model(path)  # the file itself is fine
    (message,) = expect_error(path, UnsupportedModelError, loaders=(import_onnx,))
    assert "opset 6" in message and "17" in message


def test_control_flow_is_refused(tmp_path: Path) -> None:
    then = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    (message,) = expect_error(path, UnsupportedModelError, loaders=(import_onnx,))
    assert "'branch'" in message and "If" in message


def test_sequence_output_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    (message,) = expect_error(path, UnsupportedModelError, loaders=(import_onnx,))
    assert "'seq'" in message and "not a tensor" in message


def test_model_local_functions_are_refused(tmp_path: Path) -> None:
    fn = helper.make_function(
        "local", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    node = helper.make_node("Twice", ["x"], ["y"], domain="local")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, functions=[fn], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    )
    path = tmp_path / "functions.onnx"
    onnx.save(model, str(path))
    expect_error(path, UnsupportedModelError, loaders=(import_onnx,))


# -- external data ---------------------------------------------------------------------


def external_model() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), weight, bias


def save_external(tmp_path: Path) -> tuple[Path, onnx.ModelProto, np.ndarray, np.ndarray]:
    model, weight, bias = external_model()
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "ext.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.data",
        size_threshold=0,
    )
    assert (folder / "ext.data").is_file()
    stored = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    return path, model, weight, bias


def test_external_data_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, model, weight, bias = save_external(tmp_path)
    monkeypatch.chdir(tmp_path)  # the data file is found beside the model, not in the working folder
    graph = import_onnx(path)
    np.testing.assert_array_equal(graph.constants["w"].const, weight)
    np.testing.assert_array_equal(graph.constants["b"].const, bias)
    verify(graph)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(run(to_onnx(graph), {"x": x})[0], x @ weight + bias, rtol=1e-5, atol=1e-6)
    loaded = load_model(path)
    assert all(t.data_location != TensorProto.EXTERNAL for t in loaded.graph.initializer)


def test_shape_inference_reads_a_shape_stored_outside_the_file(tmp_path: Path) -> None:
    # Propagated through Concat, the shape's values give the Reshape its output's dims: shape
    # inference must see the model with its external data loaded, not the file's bytes alone.
    nodes = [helper.make_node("Concat", ["s0", "s1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = [numpy_helper.from_array(np.array([d], np.int64), f"s{i}") for i, d in enumerate((3, 4))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert import_onnx(model).outputs[0].type.shape == (3, 4)
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    assert onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).graph.initializer[0].data_location \
        == TensorProto.EXTERNAL
    assert import_onnx(tmp_path / "m.onnx").outputs[0].type.shape == (3, 4)


def test_missing_external_data(tmp_path: Path) -> None:
    path, *_ = save_external(tmp_path)
    (path.parent / "ext.data").unlink()
    expect_error(path, ModelLoadError)


def test_external_data_in_a_model_proto_without_a_file() -> None:
    model, *_ = external_model()
    onnx.external_data_helper.convert_model_to_external_data(model, location="nowhere.data", size_threshold=0)
    with pytest.raises(ModelLoadError, match="external data"):
        import_onnx(model)


def test_external_data_of_an_attribute_tensor_is_loaded(tmp_path: Path) -> None:
    # Initializers inline: only the Constant node's tensor attribute is stored outside the file.
    value = np.arange(3000, dtype=np.float32)
    node = helper.make_node("Constant", [], ["y"], name="make_y", value=numpy_helper.from_array(value, "v"))
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3000])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.external_data_helper.convert_model_to_external_data(model, location="attr.data", size_threshold=0,
                                                            convert_attribute=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    stored = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert stored.graph.node[0].attribute[0].t.data_location == TensorProto.EXTERNAL
    got = import_onnx(tmp_path / "m.onnx").node_by_name("make_y").attrs["value"].value
    assert np.array_equal(got, value)


# -- opset upgrades ------------------------------------------------------------------------


def test_opset_11_model_is_upgraded_and_runs_the_same() -> None:
    # Every one of these ops changed its form after opset 11: axes and splits became inputs.
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),
        helper.make_node("ReduceSum", ["u"], ["r"], axes=[2], keepdims=0),
        helper.make_node("Split", ["r"], ["s1", "s2"], axis=2, split=[2, 3]),
        helper.make_node("Squeeze", ["s1"], ["q"], axes=[0]),
        helper.make_node("Clip", ["s2", "lo", "hi"], ["c"]),
    ]
    graph = helper.make_graph(
        nodes,
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [3, 2]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 3]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
            numpy_helper.from_array(np.array(0.5, np.float32), "hi"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model)

    g = import_onnx(model)
    assert g.opset[""] == 17
    ops = {n.op: n for n in g.nodes}
    assert len(ops["Unsqueeze"].inputs) == 2 and "axes" not in ops["Unsqueeze"].attrs
    assert len(ops["ReduceSum"].inputs) == 2 and "axes" not in ops["ReduceSum"].attrs
    assert ops["Split"].input(1) is not None and "split" not in ops["Split"].attrs
    verify(g)

    emitted = to_onnx(g)
    onnx.checker.check_model(emitted, full_check=True)
    assert {o.domain: o.version for o in emitted.opset_import}[""] == 17
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    want = run(model, {"x": x})
    got = run(emitted, {"x": x})
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_newer_opsets_are_kept() -> None:
    g = import_onnx(small_model(opset=21))
    assert g.opset[""] == 21


def test_min_opset_can_be_raised() -> None:
    g = import_onnx(small_model(opset=17), min_opset=19)
    assert g.opset[""] == 19
