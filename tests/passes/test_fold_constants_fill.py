"""fold-constants fills ConstantOfShape without an onnxruntime session: the same arrays
(bitwise, dtype and shape) as onnxruntime's kernel, which evaluates every node here too."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.attributes import Attr, arrays_equal
from hwnas.passes.fold_constants import FoldConstants, _fill
from hwnas.passes.testing import build_model

VALUES = [None, helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25]),
          helper.make_tensor("v", TensorProto.INT32, [1], [-7]),
          helper.make_tensor("v", TensorProto.FLOAT16, [1], [1.5]),
          helper.make_tensor("v", TensorProto.BOOL, [1], [True]),
          helper.make_tensor("v", TensorProto.DOUBLE, [1], [float("nan")])]


def fills(shape: list[int], value: onnx.TensorProto | None) -> onnx.ModelProto:
    """A ConstantOfShape of `shape` (a graph constant) read by an Identity that is the output."""
    attrs = {} if value is None else {"value": value}
    fill = helper.make_node("ConstantOfShape", ["shape"], ["filled"], name="fill", **attrs)
    ident = helper.make_node("Identity", ["filled"], ["y"], name="ident")
    return build_model([fill, ident], {}, ["y"], {"shape": np.array(shape, np.int64)})


@pytest.mark.parametrize("shape", [[2, 3], [], [0, 4], [5]])
@pytest.mark.parametrize("value", range(len(VALUES)))
def test_fill_equals_onnxruntime(shape: list[int], value: int) -> None:
    graph = import_onnx(fills(shape, VALUES[value]))
    node = graph.nodes[0]
    ours = _fill(node, {})
    theirs = FoldConstants()._evaluate(node)  # one node in its own onnxruntime session
    assert ours is not None and theirs is not None
    assert arrays_equal(ours, theirs[0]), (ours, theirs[0])


def test_fold_replaces_fill_by_its_array() -> None:
    graph = import_onnx(fills([2, 3], VALUES[2]))
    assert FoldConstants().run(graph).changed
    assert [n.op for n in graph.nodes] == ["Identity"]
    folded = graph.nodes[0].operand(0).const
    assert folded is not None and arrays_equal(folded, np.full((2, 3), -7, np.int32))


def test_fill_declines_what_is_not_plainly_a_fill() -> None:
    # A shape computed at run time: not a constant, nothing to fill.
    graph = import_onnx(build_model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill")],
                                    {"s": (TensorProto.INT64, [2])}, ["y"]))
    assert _fill(graph.nodes[0], {}) is None
    # A value of two elements (the kernel refuses it): left to onnxruntime, which says no.
    graph = import_onnx(fills([2], VALUES[1]))
    node = graph.nodes[0]
    node.attrs["value"] = Attr.tensor(np.array([1.0, 2.0], np.float32))
    assert _fill(node, {}) is None
    assert FoldConstants()._evaluate(node) is None
