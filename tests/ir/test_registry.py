"""The op registry: shape inference checked against what onnxruntime produces, op counts
against hand-computed numbers, and totals on the model-zoo light models."""

from __future__ import annotations

import math
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph, Node
from hwnas.ir.registry import graph_weights, infer_types, is_priced, op_counts, registered_ops
from hwnas.ir.types import DType, TensorType
from hwnas.ir.verifier import compatible, verify

RNG = np.random.default_rng(0)
SESSION_OPTIONS = ort.SessionOptions()
SESSION_OPTIONS.log_severity_level = 4
SESSION_OPTIONS.intra_op_num_threads = 1  # tiny models: threads cost more than they save


class Const:
    """A constant input (an initializer): the registry may read its value."""

    def __init__(self, array: np.ndarray | list) -> None:
        self.array = np.asarray(array)


Input = tuple | Const | np.ndarray | None
"""A shape (a float32 graph input), an int64 array (an integer graph input), a Const, or
None (an absent optional input)."""


def one_node_model(
    op: str, inputs: list[Input], attrs: dict | None = None, n_outputs: int = 1, opset: int = 17
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    names, graph_inputs, inits, feeds = [], [], [], {}
    for i, x in enumerate(inputs):
        name = f"in{i}"
        if x is None:
            names.append("")
            continue
        names.append(name)
        if isinstance(x, Const):
            inits.append(numpy_helper.from_array(x.array, name))
            continue
        data = RNG.standard_normal(x).astype(np.float32) if isinstance(x, tuple) else np.asarray(x)
        feeds[name] = data
        elem = helper.np_dtype_to_tensor_dtype(data.dtype)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, data.shape))
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, name="node", **(attrs or {}))
    graph = helper.make_graph(
        [node], "one", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outs], initializer=inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 18 else 9
    return model, feeds


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), SESSION_OPTIONS, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check_against_ort(
    op: str,
    inputs: list[Input],
    attrs: dict | None = None,
    n_outputs: int = 1,
    opset: int = 17,
) -> Node:
    """Build a one-node model, run it in onnxruntime, and check that the registry infers
    exactly the output types onnxruntime produced (and that the imported graph, typed by
    onnx's inference, verifies). Returns the imported node."""
    model, feeds = one_node_model(op, inputs, attrs, n_outputs, opset)
    actual = run_ort(model, feeds)
    graph = import_onnx(model)
    (node,) = [n for n in graph.nodes if n.op == op]
    inferred = infer_types(node)
    for i, out in enumerate(actual):
        expected = TensorType(DType.from_numpy(out.dtype), tuple(out.shape))
        assert inferred[i] == expected, f"{op} output {i}: registry says {inferred[i]}, onnxruntime gives {expected}"
    verify(graph)
    return node


def w(*shape: int) -> Const:
    return Const(RNG.standard_normal(shape).astype(np.float32))


def i64(values: list[int]) -> Const:
    return Const(np.array(values, dtype=np.int64))


# -- shapes against onnxruntime ----------------------------------------------------------

CONV_CASES = {
    "pads": ([(1, 3, 9, 9), w(8, 3, 3, 3)], {"pads": [1, 1, 1, 1]}),
    "bias": ([(1, 3, 9, 9), w(8, 3, 3, 3), w(8)], {}),
    "strides-asymmetric-pads": ([(2, 3, 10, 11), w(4, 3, 3, 3)], {"strides": [2, 3], "pads": [0, 1, 2, 0]}),
    "dilations": ([(1, 2, 12, 12), w(4, 2, 3, 3)], {"dilations": [2, 3]}),
    "depthwise": ([(1, 6, 8, 8), w(6, 1, 3, 3)], {"group": 6, "pads": [1, 1, 1, 1]}),
    "groups": ([(1, 4, 8, 8), w(6, 2, 3, 3)], {"group": 2, "strides": [2, 2]}),
    "same-upper": ([(1, 3, 9, 9), w(4, 3, 3, 3)], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same-lower": ([(1, 3, 10, 10), w(4, 3, 4, 4)], {"auto_pad": "SAME_LOWER", "strides": [3, 3]}),
    "valid": ([(1, 3, 10, 10), w(4, 3, 3, 3)], {"auto_pad": "VALID", "strides": [2, 2]}),
    "kernel-shape-attr": ([(1, 3, 7, 7), w(2, 3, 2, 2)], {"kernel_shape": [2, 2]}),
    "1d": ([(1, 2, 10), w(3, 2, 4)], {"strides": [3]}),
    "3d": ([(1, 2, 5, 6, 7), w(3, 2, 2, 3, 3)], {"pads": [1, 0, 1, 0, 1, 1]}),
}


@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv_shapes(case: str) -> None:
    inputs, attrs = CONV_CASES[case]
    check_against_ort("Conv", inputs, attrs)


POOL_CASES = {
    "max-floor": ("MaxPool", (1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    "max-ceil": ("MaxPool", (1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "max-ceil-pads": (
        "MaxPool",
        (1, 1, 6, 7),
        {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1},
    ),
    "max-ceil-dilations": (
        "MaxPool",
        (1, 1, 9, 9),
        {"kernel_shape": [2, 2], "strides": [2, 2], "dilations": [2, 2], "ceil_mode": 1},
    ),
    "max-same-upper": ("MaxPool", (1, 1, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "avg-ceil": ("AveragePool", (1, 3, 10, 10), {"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1}),
    "avg-pads": ("AveragePool", (1, 3, 6, 6), {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    "global-avg": ("GlobalAveragePool", (2, 5, 4, 3), {}),
    "global-max-1d": ("GlobalMaxPool", (2, 5, 4), {}),
}


@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
def test_pool_shapes(case: str) -> None:
    op, x, attrs = POOL_CASES[case]
    check_against_ort(op, [x], attrs)


# The last window would start in the right padding: onnxruntime and PyTorch drop it (the
# ONNX spec says so from MaxPool-22 on), so the output is 3x3, not ceil((5+2-2)/2)+1 = 4.
WINDOW_IN_PADDING = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}


@pytest.mark.parametrize("opset", [17, 22])
def test_maxpool_ceil_drops_window_in_padding(opset: int) -> None:
    # onnx's shape inference before MaxPool-22 keeps that window (4x4); the importer
    # corrects it with the registry's inference, so the imported graph verifies.
    node = check_against_ort("MaxPool", [(1, 2, 5, 5)], WINDOW_IN_PADDING, opset=opset)
    assert node.outputs[0].type == TensorType(DType.FLOAT, (1, 2, 3, 3))


@pytest.mark.parametrize("op, opset", [("AveragePool", 17), ("LpPool", 18)])  # LpPool has ceil_mode from 18
def test_other_pools_drop_window_in_padding(op: str, opset: int) -> None:
    check_against_ort(op, [(1, 2, 5, 5)], WINDOW_IN_PADDING, opset=opset)


def test_maxpool_indices_output() -> None:
    node = check_against_ort(
        "MaxPool", [(1, 2, 7, 7)], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, n_outputs=2
    )
    assert node.outputs[1].type is not None and node.outputs[1].type.dtype is DType.INT64


@pytest.mark.parametrize(
    "a, b, trans_a, trans_b",
    [((3, 5), (5, 4), 0, 0), ((5, 3), (5, 4), 1, 0), ((3, 5), (4, 5), 0, 1), ((5, 3), (4, 5), 1, 1)],
)
def test_gemm_shapes_and_macs(a: tuple, b: tuple, trans_a: int, trans_b: int) -> None:
    node = check_against_ort("Gemm", [a, w(*b), w(4)], {"transA": trans_a, "transB": trans_b})
    counts = op_counts(node)
    assert counts is not None
    m, n, k = 3, 4, 5
    assert counts.macs == m * n * k
    assert counts.flops == 2 * m * n * k + m * n  # one add per output for the bias
    assert counts.params == b[0] * b[1] + 4


MATMUL_CASES = {
    "2d": ((3, 5), (5, 4)),
    "batch-broadcast": ((2, 1, 4, 5), (3, 5, 6)),
    "batch-one-side": ((7, 4, 5), (5, 6)),
    "a-1d": ((5,), (2, 5, 6)),
    "b-1d": ((3, 4, 5), (5,)),
    "both-1d": ((5,), (5,)),
}
MATMUL_MACS = {
    "2d": 3 * 4 * 5,
    "batch-broadcast": 2 * 3 * 4 * 6 * 5,
    "batch-one-side": 7 * 4 * 6 * 5,
    "a-1d": 2 * 6 * 5,
    "b-1d": 3 * 4 * 5,
    "both-1d": 5,
}


@pytest.mark.parametrize("case", list(MATMUL_CASES), ids=list(MATMUL_CASES))
def test_matmul_shapes_and_macs(case: str) -> None:
    a, b = MATMUL_CASES[case]
    node = check_against_ort("MatMul", [a, b])
    counts = op_counts(node)
    assert counts is not None and counts.macs == MATMUL_MACS[case] and counts.flops == 2 * MATMUL_MACS[case]
    assert counts.params == 0  # both operands are run-time inputs


EINSUM_CASES = {
    # equation, operand shapes, MACs (each combination of letters once per further operand), FLOPs
    "batched-matmul": ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5, 2 * 2 * 3 * 4 * 5),
    "weight": ("bij,jk->bik", [(2, 3, 4), w(4, 6)], 2 * 3 * 4 * 6, 2 * 2 * 3 * 4 * 6),
    "outer": ("i,j->ij", [(3,), (5,)], 15, 30),
    "three-operands": ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)], 2 * (2 * 3 * 4 * 5), 4 * (2 * 3 * 4 * 5)),
    "sum-one-operand": ("ij->i", [(3, 4)], 0, 12),
}


@pytest.mark.parametrize("case", list(EINSUM_CASES), ids=list(EINSUM_CASES))
def test_einsum_is_priced_by_its_equation(case: str) -> None:
    equation, inputs, macs, flops = EINSUM_CASES[case]
    node = check_against_ort("Einsum", inputs, {"equation": equation}, opset=17)
    counts = op_counts(node)
    assert counts is not None and counts.macs == macs and counts.flops == flops


def test_an_einsum_with_an_ellipsis_is_unpriced_not_zero() -> None:
    node = check_against_ort("Einsum", [(2, 3, 4), (4, 5)], {"equation": "...j,jk->...k"}, opset=17)
    assert is_priced(node) and op_counts(node) is None


TENSOR_CASES = {
    "concat": ("Concat", [(2, 3, 4), (2, 1, 4), (2, 5, 4)], {"axis": 1}, 17),
    "concat-negative-axis": ("Concat", [(2, 3, 4), (2, 3, 1)], {"axis": -1}, 17),
    "reshape-zero-and-minus-one": ("Reshape", [(2, 3, 4), i64([0, -1])], {}, 17),
    "reshape-minus-one-first": ("Reshape", [(2, 3, 4), i64([-1, 0, 2])], {}, 17),
    "reshape-zeros": ("Reshape", [(2, 3, 4), i64([0, 0, -1, 1])], {}, 17),
    "reshape-plain": ("Reshape", [(2, 3, 4), i64([4, 6])], {}, 17),
    "flatten-default": ("Flatten", [(2, 3, 4, 5)], {}, 17),
    "flatten-0": ("Flatten", [(2, 3, 4, 5)], {"axis": 0}, 17),
    "flatten-end": ("Flatten", [(2, 3, 4, 5)], {"axis": 4}, 17),
    "flatten-minus-1": ("Flatten", [(2, 3, 4, 5)], {"axis": -1}, 17),
    "flatten-minus-4": ("Flatten", [(2, 3, 4, 5)], {"axis": -4}, 17),
    "transpose-default": ("Transpose", [(2, 3, 4)], {}, 17),
    "transpose-perm": ("Transpose", [(2, 3, 4, 5)], {"perm": [0, 2, 3, 1]}, 17),
    "squeeze-axes-input": ("Squeeze", [(1, 3, 1, 5), i64([0, -2])], {}, 17),
    "squeeze-all": ("Squeeze", [(1, 3, 1, 5)], {}, 17),
    "squeeze-axes-attr-opset11": ("Squeeze", [(1, 3, 1, 5)], {"axes": [2]}, 11),
    "unsqueeze-axes-input": ("Unsqueeze", [(3, 5), i64([0, -1])], {}, 17),
    "unsqueeze-interleaved": ("Unsqueeze", [(3, 5), i64([1, 3])], {}, 17),
    "unsqueeze-axes-attr-opset11": ("Unsqueeze", [(3, 5)], {"axes": [0, 3]}, 11),
    "gather-scalar-index": ("Gather", [(5, 4, 3), i64(2).array], {"axis": 0}, 17),
    "gather-2d-indices": ("Gather", [(5, 4, 3), np.array([[0, 1], [3, 2], [1, 1]], np.int64)], {"axis": 1}, 17),
    "gather-negative-axis": ("Gather", [(5, 4, 3), np.array([2, 0], np.int64)], {"axis": -1}, 17),
    "gather-constant-data": ("Gather", [w(6, 2), np.array([5, 1, 0], np.int64)], {}, 17),
    "shape": ("Shape", [(2, 3, 4)], {}, 17),
    "shape-start-end": ("Shape", [(2, 3, 4)], {"start": 1, "end": -1}, 17),
    "shape-clamped": ("Shape", [(2, 3, 4)], {"start": -10, "end": 10}, 17),
    "shape-empty": ("Shape", [(2, 3, 4)], {"start": 2, "end": 1}, 17),
    "softmax-last": ("Softmax", [(2, 3, 4)], {}, 17),
    "softmax-axis-1": ("Softmax", [(2, 3, 4)], {"axis": 1}, 17),
    "layernorm-last": ("LayerNormalization", [(2, 3, 4), w(4), w(4)], {}, 17),
    "layernorm-axis-1": ("LayerNormalization", [(2, 3, 4), w(3, 4)], {"axis": 1}, 17),
}


@pytest.mark.parametrize("case", list(TENSOR_CASES), ids=list(TENSOR_CASES))
def test_tensor_op_shapes(case: str) -> None:
    op, inputs, attrs, opset = TENSOR_CASES[case]
    check_against_ort(op, inputs, attrs, opset=opset)


def test_squeeze_with_runtime_axes_claims_nothing_wrong() -> None:
    # The axes are a graph input: the registry cannot know them, so it must not guess
    # that every 1-dim goes (which would give [3,5]).
    model, feeds = one_node_model("Squeeze", [(1, 3, 1, 5), np.array([-2], np.int64)])
    (actual,) = run_ort(model, feeds)
    assert actual.shape == (1, 3, 5)
    graph = import_onnx(model)
    (inferred,) = infer_types(graph.nodes[0])
    assert compatible(inferred, TensorType(DType.FLOAT, actual.shape)) if inferred is not None else True
    verify(graph)


def test_layernorm_statistics_outputs() -> None:
    node = check_against_ort("LayerNormalization", [(2, 3, 4), w(3, 4), w(3, 4)], {"axis": -2}, n_outputs=3)
    assert node.outputs[1].type == TensorType(DType.FLOAT, (2, 1, 1))


REDUCE_CASES = {
    "mean-attr-keep": ("ReduceMean", [(2, 3, 4)], {"axes": [1]}, 17),
    "mean-attr-drop": ("ReduceMean", [(2, 3, 4)], {"axes": [1, -1], "keepdims": 0}, 17),
    "mean-all-keep": ("ReduceMean", [(2, 3, 4)], {}, 17),
    "mean-all-drop": ("ReduceMean", [(2, 3, 4)], {"keepdims": 0}, 17),
    "mean-input-opset18": ("ReduceMean", [(2, 3, 4), i64([0, 2])], {"keepdims": 0}, 18),
    "sum-input-keep": ("ReduceSum", [(2, 3, 4), i64([1])], {}, 17),
    "sum-input-drop": ("ReduceSum", [(2, 3, 4), i64([-1, 0])], {"keepdims": 0}, 17),
    "sum-no-axes": ("ReduceSum", [(2, 3, 4)], {"keepdims": 0}, 17),
    "sum-empty-axes-noop": ("ReduceSum", [(2, 3, 4), i64([])], {"noop_with_empty_axes": 1}, 17),
    "sum-empty-axes-reduces": ("ReduceSum", [(2, 3, 4), i64([])], {"keepdims": 1}, 17),
    "max-attr-drop": ("ReduceMax", [(2, 3, 4)], {"axes": [0, 1, 2], "keepdims": 0}, 17),
    "l2-attr": ("ReduceL2", [(2, 3, 4)], {"axes": [2]}, 17),
}


@pytest.mark.parametrize("case", list(REDUCE_CASES), ids=list(REDUCE_CASES))
def test_reduce_shapes(case: str) -> None:
    op, inputs, attrs, opset = REDUCE_CASES[case]
    node = check_against_ort(op, inputs, attrs, opset=opset)
    counts = op_counts(node)
    assert counts is not None and counts.macs == 0 and counts.flops >= 2 * 3 * 4


# -- counts by hand ----------------------------------------------------------------------


def test_conv_counts() -> None:
    node = check_against_ort("Conv", [(1, 3, 32, 32), w(8, 3, 3, 3), w(8)], {"pads": [1, 1, 1, 1]})
    counts = op_counts(node)
    assert counts is not None
    outputs = 1 * 8 * 32 * 32
    assert counts.macs == outputs * 3 * 3 * 3 == 221_184
    assert counts.flops == 2 * counts.macs + outputs
    assert counts.params == 8 * 3 * 3 * 3 + 8
    assert counts.param_bytes == 4 * counts.params
    assert counts.bytes_read == 4 * (3 * 32 * 32) + counts.param_bytes
    assert counts.bytes_written == 4 * outputs


def test_grouped_and_strided_conv_macs() -> None:
    node = check_against_ort("Conv", [(1, 8, 16, 16), w(12, 2, 3, 3)], {"group": 4, "strides": [2, 2]})
    counts = op_counts(node)
    assert counts is not None
    assert node.outputs[0].type == TensorType(DType.FLOAT, (1, 12, 7, 7))
    assert counts.macs == 12 * 7 * 7 * (2 * 3 * 3)
    assert counts.flops == 2 * counts.macs  # no bias


def test_depthwise_conv_macs() -> None:
    node = check_against_ort("Conv", [(1, 6, 8, 8), w(6, 1, 3, 3)], {"group": 6, "pads": [1, 1, 1, 1]})
    counts = op_counts(node)
    assert counts is not None and counts.macs == 6 * 8 * 8 * 9


def test_pool_and_softmax_flops() -> None:
    pool = check_against_ort("MaxPool", [(1, 2, 8, 8)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1})
    counts = op_counts(pool)
    assert counts is not None and counts.macs == 0 and counts.flops == 2 * 4 * 4 * 9
    soft = check_against_ort("Softmax", [(2, 10)], {})
    counts = op_counts(soft)
    assert counts is not None and counts.macs == 0 and counts.flops > 0 and counts.params == 0


def test_movement_ops_are_priced_but_free() -> None:
    node = check_against_ort("Transpose", [(2, 3, 4)], {"perm": [2, 0, 1]})
    counts = op_counts(node)
    assert counts is not None
    assert counts.macs == counts.flops == 0
    assert counts.bytes_read == counts.bytes_written == 4 * 24


# -- the light models ------------------------------------------------------------------

KNOWN_TOTALS = {  # model: (MACs, parameters), batch 1 at 224x224
    "resnet50": (4.09e9, 25.6e6),
    "vgg19": (19.6e9, 143.7e6),
    "bvlc_alexnet": (None, 60.97e6),
}


def totals(graph: Graph) -> tuple[int, int]:
    weights = graph_weights(graph)
    macs = params = 0
    for n in graph.nodes:
        c = op_counts(n, weights=weights)
        if c is not None:
            macs += c.macs
            params += c.params
    return macs, params


@pytest.mark.parametrize("name", list(KNOWN_TOTALS))
def test_known_totals(light_model_paths: dict[str, str], name: str) -> None:
    macs, params = totals(import_onnx(light_model_paths[name]))
    want_macs, want_params = KNOWN_TOTALS[name]
    if want_macs is not None:
        assert math.isclose(macs, want_macs, rel_tol=0.01), f"{name}: {macs:.4g} MACs"
    assert math.isclose(params, want_params, rel_tol=0.01), f"{name}: {params:.4g} parameters"


def test_light_models_are_fully_priced_and_typed(light_model: str) -> None:
    graph = import_onnx(light_model)
    for n in graph.nodes:
        assert is_priced(n), f"{n.name} ({n.op}) is not priced"
        for v in n.outputs:
            assert v.type is not None and v.type.is_static, f"{n.name}: {v}"
    macs, params = totals(graph)
    assert macs > 0 and params > 0


REQUIRED_OPS = {
    "MatMul",
    "Gemm",
    "Softmax",
    "LayerNormalization",
    "Gelu",
    "Erf",
    "HardSwish",
    "Sigmoid",
    "Transpose",
    "Reshape",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Pad",
    "Resize",
    "ReduceMean",
    "ReduceSum",
}


def test_registry_covers_light_models_and_common_ops(light_model_paths: dict[str, str]) -> None:
    used = set()
    for path in light_model_paths.values():
        used |= {n.op_type for n in onnx.load(path).graph.node}  # as written in the file (opset 9)
        used |= {n.qualified_op for n in import_onnx(path).nodes}  # as imported (opset 17)
    missing = (used | REQUIRED_OPS) - registered_ops()
    assert not missing, f"not in the registry: {sorted(missing)}"


def test_registry_is_keyed_by_domain() -> None:
    ops = registered_ops()
    assert "Conv" in ops and "com.example::Conv" not in ops
    g = Graph()
    x = g.add_input("x", TensorType(DType.FLOAT, (1, 1, 3, 3)))
    k = g.add_constant(np.ones((1, 1, 1, 1), np.float32), "k")
    node = g.add_node("Conv", [x, k], domain="com.example")
    assert not is_priced(node) and op_counts(node) is None


# -- ops not in the registry -----------------------------------------------------------


def test_an_op_without_a_cost_entry_is_imported_typed_and_unpriced() -> None:
    assert "Det" not in registered_ops()
    model, feeds = one_node_model("Det", [(2, 3, 3)])
    (expected,) = run_ort(model, feeds)
    graph = import_onnx(model)
    (node,) = graph.nodes
    assert node.outputs[0].type == TensorType(DType.FLOAT, expected.shape)
    assert infer_types(node) == [TensorType(DType.FLOAT, expected.shape)]  # onnx's inference, as fallback
    assert not is_priced(node)
    assert op_counts(node) is None
    verify(graph)


def test_custom_domain_op_is_imported_typed_and_unpriced() -> None:
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", alpha=0.5)
    graph_proto = helper.make_graph(
        [node, helper.make_node("Relu", ["y"], ["z"])],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(
        graph_proto, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    graph = import_onnx(model)
    fancy, relu = graph.nodes
    assert (fancy.domain, fancy.op, fancy.qualified_op) == ("com.example", "FancyOp", "com.example::FancyOp")
    assert fancy.attr("alpha") == 0.5
    assert fancy.outputs[0].type == TensorType(DType.FLOAT, (2, 3))  # from the model's value_info
    assert infer_types(fancy) == [None]  # nothing is known about the op itself
    assert not is_priced(fancy) and op_counts(fancy) is None
    assert is_priced(relu) and op_counts(relu) is not None
    verify(graph)


# -- every node test: the registry against the reference outputs ---------------------------


def test_inference_matches_reference_outputs_on_node_tests(imported_cases: tuple) -> None:
    """For each node whose output is a graph output, the type the registry infers (where it
    knows all of it) is the type of the reference output."""
    checked, wrong = 0, []
    for item in imported_cases:
        if item.graph is None:
            continue
        graph, (_, expected) = item.graph, item.case.data_sets[0]
        position = {id(v): i for i, v in enumerate(graph.outputs)}
        for node in graph.nodes:
            try:
                inferred = infer_types(node)
            except ValueError as e:
                wrong.append(f"{item.case.name}: {e}")
                continue
            for v, t in zip(node.outputs, inferred, strict=True):
                ref = expected[position[id(v)]] if id(v) in position else None
                if ref is None or isinstance(ref, list) or t is None or not t.is_static:
                    continue
                ref = numpy_helper.to_array(ref) if isinstance(ref, onnx.TensorProto) else np.asarray(ref)
                checked += 1
                if t != TensorType(DType.from_numpy(ref.dtype), ref.shape):
                    wrong.append(f"{item.case.name}: {node.op} infers {t}, reference is {ref.dtype}{list(ref.shape)}")
    assert not wrong, f"{len(wrong)} wrong:\n" + "\n".join(wrong)
    assert checked > 1500


def test_light_model_dir_exists(light_model_paths: dict[str, str]) -> None:
    assert all(os.path.isfile(p) for p in light_model_paths.values())


def test_flatten_keeps_a_symbolic_batch_dim() -> None:
    from hwnas.ir.attributes import Attr
    from hwnas.ir.graph import Graph
    from hwnas.ir.registry import infer_types
    from hwnas.ir.types import DType, TensorType

    g = Graph()
    x = g.add_input("x", TensorType(DType.FLOAT, ("N", 4, 1, 1)))
    node = g.add_node("Flatten", [x], attrs={"axis": Attr.int(1)})
    assert infer_types(node) == [TensorType(DType.FLOAT, ("N", 4))]


@pytest.mark.parametrize(("shapes", "expected"), [
    (((2, 3), (2, 3)), (2, 3)),
    (((1, "n", None), (1, "n", None)), (1, "n", None)),  # equal shapes: each dim is its own broadcast
    (((2, 1), (1, 3)), (2, 3)),
    (((3,), (2, 1)), (2, 3)),
    ((("n", 1), (1, 4)), ("n", 4)),
    ((("n",), ("m",)), (None,)),  # two different symbols: unknown
    (((None,), (1,)), (None,)),
    (((2,), None), None),
])
def test_broadcast(shapes: tuple, expected: tuple | None) -> None:
    from hwnas.ir.ops.common import broadcast

    assert broadcast(*shapes) == expected
    if all(s is not None and all(isinstance(d, int) for d in s) for s in shapes):
        assert expected == np.broadcast_shapes(*shapes)


def test_broadcast_refuses_shapes_that_do_not_broadcast() -> None:
    from hwnas.ir.ops.common import broadcast

    with pytest.raises(ValueError, match="do not broadcast"):
        broadcast((2, 3), (3, 3))
