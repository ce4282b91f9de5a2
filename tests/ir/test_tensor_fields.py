"""tensor_to_array reads tensors kept in their typed fields (float_data, int64_data, ...) as
onnx's own numpy_helper.to_array does: same dtype, shape and bits, same refusals."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.ir.attributes import arrays_equal, tensor_to_array

CASES = [
    helper.make_tensor("f", TensorProto.FLOAT, [2, 2], [0.1, -0.0, float("nan"), 3e38]),
    helper.make_tensor("d", TensorProto.DOUBLE, [3], [0.1, 1e300, float("-inf")]),
    helper.make_tensor("i", TensorProto.INT32, [2], [-2**31, 2**31 - 1]),
    helper.make_tensor("l", TensorProto.INT64, [], [-2**63]),
    helper.make_tensor("e", TensorProto.FLOAT, [0, 3], []),
    helper.make_tensor("h", TensorProto.FLOAT16, [2], [1.5, -2.0]),  # int32_data: onnx's path
    helper.make_tensor("b", TensorProto.BOOL, [2], [True, False]),
    helper.make_tensor("u", TensorProto.UINT32, [1], [2**32 - 1]),
]


@pytest.mark.parametrize("t", CASES, ids=lambda t: t.name)
def test_typed_fields_read_as_onnx_reads_them(t: onnx.TensorProto) -> None:
    ours, theirs = tensor_to_array(t), numpy_helper.to_array(t)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert arrays_equal(ours, theirs)


@pytest.mark.parametrize("field", ["float_data", "int64_data"])
def test_data_that_does_not_fit_the_dims_is_refused(field: str) -> None:
    code = TensorProto.FLOAT if field == "float_data" else TensorProto.INT64
    t = onnx.TensorProto(name="bad", dims=[3], data_type=code, **{field: [1]})
    with pytest.raises(ValueError, match="tensor 'bad' does not hold its type's data"):
        tensor_to_array(t)
