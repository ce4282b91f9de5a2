"""Tensor element types and tensor types of the IR."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

Dim = int | str | None
"""A dimension: a size, a symbolic name, or None when nothing is known."""


class DType(enum.IntEnum):
    """Element types, numbered as ONNX's TensorProto numbers them."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26

    @property
    def short(self) -> str:
        """The name the IR text uses: f32, i8, u4, bf16, ..."""
        return _SHORT[self]

    @classmethod
    def parse(cls, text: str) -> DType:
        """The element type of a short name; ValueError for an unknown one."""
        try:
            return _BY_SHORT[text]
        except KeyError:
            raise ValueError(f"unknown element type '{text}'") from None

    @property
    def bits(self) -> int:
        """Storage bits of one element (strings count as 8 bytes: a pointer)."""
        return _BITS.get(self, 8 * self.numpy.itemsize if self is not DType.STRING else 64)

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype ONNX stores this type as (4-bit and float8 types use ml_dtypes)."""
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(self)))

    @classmethod
    def from_numpy(cls, dtype: np.dtype) -> DType:
        """The element type of a numpy dtype, as ONNX maps it."""
        dtype = np.dtype(dtype)
        found = _BY_NUMPY.get(dtype)
        if found is None:
            found = _BY_NUMPY[dtype] = cls(helper.np_dtype_to_tensor_dtype(dtype))
        return found

    @property
    def is_float(self) -> bool:
        """True for every floating-point type, float8 and float4 included."""
        return self in _FLOATS


_SHORT = {
    DType.UNDEFINED: "?", DType.FLOAT: "f32", DType.UINT8: "u8", DType.INT8: "i8",
    DType.UINT16: "u16", DType.INT16: "i16", DType.INT32: "i32", DType.INT64: "i64",
    DType.STRING: "str", DType.BOOL: "bool", DType.FLOAT16: "f16", DType.DOUBLE: "f64",
    DType.UINT32: "u32", DType.UINT64: "u64", DType.COMPLEX64: "c64", DType.COMPLEX128: "c128",
    DType.BFLOAT16: "bf16", DType.FLOAT8E4M3FN: "f8e4m3fn", DType.FLOAT8E4M3FNUZ: "f8e4m3fnuz",
    DType.FLOAT8E5M2: "f8e5m2", DType.FLOAT8E5M2FNUZ: "f8e5m2fnuz", DType.UINT4: "u4",
    DType.INT4: "i4", DType.FLOAT4E2M1: "f4e2m1", DType.FLOAT8E8M0: "f8e8m0",
    DType.UINT2: "u2", DType.INT2: "i2",
}
_BY_SHORT = {v: k for k, v in _SHORT.items()}
_BY_NUMPY: dict[np.dtype, DType] = {}  # onnx's mapping, remembered: constants ask it thousands of times
_BY_NUMBER = {int(d): d for d in DType}
_BITS = {
    DType.BOOL: 8, DType.UINT4: 4, DType.INT4: 4, DType.FLOAT4E2M1: 4,
    DType.UINT2: 2, DType.INT2: 2, DType.UNDEFINED: 0,
}
_FLOATS = {
    DType.FLOAT, DType.FLOAT16, DType.DOUBLE, DType.BFLOAT16, DType.FLOAT8E4M3FN,
    DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ, DType.FLOAT4E2M1,
    DType.FLOAT8E8M0,
}


@dataclass(frozen=True, slots=True)
class TensorType:
    """A tensor's element type and shape; `shape is None` means the rank is unknown."""

    dtype: DType
    shape: tuple[Dim, ...] | None

    @property
    def rank(self) -> int | None:
        """The number of dimensions, or None when unknown."""
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when the rank and every dimension are known integers."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known integer, else None."""
        if self.shape is None:
            return None
        dims = tuple(d for d in self.shape if isinstance(d, int))
        return dims if len(dims) == len(self.shape) else None

    def numel(self) -> int | None:
        """Element count, or None when a dimension is not a known integer."""
        shape = self.static_shape
        if shape is None:
            return None
        n = 1
        for d in shape:
            n *= d
        return n

    def nbytes(self) -> int | None:
        """Storage bytes (sub-byte types packed, rounded up), or None when not static."""
        n = self.numel()
        return None if n is None else (n * self.dtype.bits + 7) // 8

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype.short}[*]"
        return f"{self.dtype.short}[{','.join(_dim_text(d) for d in self.shape)}]"

    @classmethod
    def of_array(cls, array: np.ndarray) -> TensorType:
        """The type of a numpy array (always static)."""
        return cls(DType.from_numpy(array.dtype), array.shape)  # numpy's shape: a tuple of ints

    def to_onnx(self) -> onnx.TypeProto:
        """The ONNX tensor type; symbolic dims become dim_param, unknown ones are left empty."""
        shape = None if self.shape is None else [d if d is not None else "" for d in self.shape]
        tp = helper.make_tensor_type_proto(int(self.dtype), shape)
        if self.shape is not None:
            for dim, d in zip(tp.tensor_type.shape.dim, self.shape, strict=True):
                if d is None:
                    dim.Clear()
        return tp

    @classmethod
    def from_onnx(cls, tp: onnx.TypeProto) -> TensorType | None:
        """The tensor type of an ONNX type; None for sequences, maps and optionals."""
        if tp.WhichOneof("value") != "tensor_type":
            return None
        tt = tp.tensor_type
        dtype = _BY_NUMBER.get(tt.elem_type)
        if dtype is None:
            dtype = DType(tt.elem_type)  # an unknown number: the enum's error
        if not tt.HasField("shape"):
            return cls(dtype, None)
        dims: list[Dim] = []
        for d in tt.shape.dim:
            kind = d.WhichOneof("value")
            dims.append(d.dim_value if kind == "dim_value" else d.dim_param if kind == "dim_param" else None)
        return cls(dtype, tuple(dims))


def _dim_text(d: Dim) -> str:
    return "?" if d is None else str(d)
