"""Typed node attributes: every value keeps the ONNX kind it was written with."""

from __future__ import annotations

import builtins
import enum
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer


class AttrKind(enum.Enum):
    """The ONNX attribute kinds the IR holds; the kind survives a round trip, so 1 and 1.0 differ."""

    INT = "int"
    FLOAT = "float"
    STRING = "string"
    TENSOR = "tensor"
    INTS = "ints"
    FLOATS = "floats"
    STRINGS = "strings"
    TENSORS = "tensors"


_FROM_ONNX = {
    AttributeProto.INT: AttrKind.INT,
    AttributeProto.FLOAT: AttrKind.FLOAT,
    AttributeProto.STRING: AttrKind.STRING,
    AttributeProto.TENSOR: AttrKind.TENSOR,
    AttributeProto.INTS: AttrKind.INTS,
    AttributeProto.FLOATS: AttrKind.FLOATS,
    AttributeProto.STRINGS: AttrKind.STRINGS,
    AttributeProto.TENSORS: AttrKind.TENSORS,
}
_TO_ONNX = {v: k for k, v in _FROM_ONNX.items()}


class UnsupportedAttribute(ValueError):
    """An attribute kind the IR does not hold (subgraphs, sparse tensors, types)."""


@dataclass(frozen=True, slots=True, eq=False)
class Attr:
    """One attribute value. Strings are `str` (UTF-8) or `bytes` when not decodable;
    tensors are numpy arrays."""

    kind: AttrKind
    value: Any

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Attr) or other.kind is not self.kind:
            return False
        if self.kind is AttrKind.TENSOR:
            return arrays_equal(self.value, other.value)
        if self.kind is AttrKind.TENSORS:
            return len(self.value) == len(other.value) and all(
                arrays_equal(a, b) for a, b in zip(self.value, other.value, strict=True)
            )
        if self.kind is AttrKind.FLOAT:
            return _float_eq(self.value, other.value)
        if self.kind is AttrKind.FLOATS:
            return len(self.value) == len(other.value) and all(
                _float_eq(a, b) for a, b in zip(self.value, other.value, strict=True)
            )
        return self.value == other.value

    def __hash__(self) -> int:
        return hash(self.kind)

    # Convenience constructors keep pass code short. Inside the class `int` and `float` name
    # these methods, hence `builtins.int` in the annotations below them.
    @staticmethod
    def int(v: int) -> Attr:
        """An INT attribute."""
        return Attr(AttrKind.INT, int(v))

    @staticmethod
    def float(v: float) -> Attr:
        """A FLOAT attribute."""
        return Attr(AttrKind.FLOAT, float(v))

    @staticmethod
    def ints(v: list[builtins.int] | tuple[builtins.int, ...]) -> Attr:
        """An INTS attribute, held as a tuple."""
        return Attr(AttrKind.INTS, tuple(int(x) for x in v))

    @staticmethod
    def floats(v: list[builtins.float] | tuple[builtins.float, ...]) -> Attr:
        """A FLOATS attribute, held as a tuple."""
        return Attr(AttrKind.FLOATS, tuple(float(x) for x in v))

    @staticmethod
    def string(v: str) -> Attr:
        """A STRING attribute."""
        return Attr(AttrKind.STRING, v)

    @staticmethod
    def tensor(v: np.ndarray) -> Attr:
        """A TENSOR attribute holding the array (not copied)."""
        return Attr(AttrKind.TENSOR, v)


def _float_eq(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality (NaN equals NaN), with dtype and shape. String elements compare
    as bytes (a `str` element stands for its UTF-8 bytes, as ONNX stores it)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return [string_bytes(x) for x in a.ravel()] == [string_bytes(x) for x in b.ravel()]
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def string_bytes(s: object) -> object:
    """The bytes of a string tensor element (`str` is taken as UTF-8)."""
    return s.encode("utf-8") if isinstance(s, str) else s


def _decode(s: bytes) -> str | bytes:
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        return s


def attr_from_onnx(a: onnx.AttributeProto) -> Attr:
    """The IR attribute of an ONNX one; UnsupportedAttribute for graphs, sparse tensors,
    types and references to function attributes."""
    if a.ref_attr_name:
        raise UnsupportedAttribute(f"attribute '{a.name}' refers to a function attribute")
    kind = _FROM_ONNX.get(a.type)
    if kind is None:
        what = AttributeProto.AttributeType.Name(a.type).lower()
        raise UnsupportedAttribute(f"attribute '{a.name}' of kind {what} is not supported")
    if kind is AttrKind.INT:
        return Attr(kind, int(a.i))
    if kind is AttrKind.FLOAT:
        return Attr(kind, float(a.f))
    if kind is AttrKind.STRING:
        return Attr(kind, _decode(a.s))
    if kind is AttrKind.TENSOR:
        return Attr(kind, tensor_to_array(a.t))
    if kind is AttrKind.INTS:
        return Attr(kind, tuple(a.ints[:]))  # a slice of a repeated field: a list of ints, built in C
    if kind is AttrKind.FLOATS:
        return Attr(kind, tuple(a.floats[:]))
    if kind is AttrKind.STRINGS:
        return Attr(kind, tuple(_decode(s) for s in a.strings))
    return Attr(kind, tuple(tensor_to_array(t) for t in a.tensors))


def attr_to_onnx(name: str, attr: Attr) -> onnx.AttributeProto:
    """The ONNX attribute `name` with the value and the kind `attr` was written with."""
    kind = attr.kind
    if kind is AttrKind.TENSOR:
        return helper.make_attribute(name, array_to_tensor(attr.value))
    if kind is AttrKind.TENSORS:
        return helper.make_attribute(
            name, [array_to_tensor(t) for t in attr.value], attr_type=AttributeProto.TENSORS
        )
    # The common kinds built field by field, as helper.make_attribute builds them (same bytes):
    # its type checks against the numbers ABCs cost more than the whole attribute. Values of
    # another Python type take its path, and its errors.
    v = attr.value
    if kind is AttrKind.INTS and type(v) is tuple:
        return AttributeProto(name=name, type=AttributeProto.INTS, ints=v)
    if kind is AttrKind.INT and type(v) is builtins.int:
        return AttributeProto(name=name, type=AttributeProto.INT, i=v)
    if kind is AttrKind.FLOAT and type(v) is builtins.float:
        return AttributeProto(name=name, type=AttributeProto.FLOAT, f=v)
    if kind is AttrKind.FLOATS and type(v) is tuple:
        return AttributeProto(name=name, type=AttributeProto.FLOATS, floats=v)
    if kind is AttrKind.STRING and isinstance(v, str | bytes):
        return AttributeProto(name=name, type=AttributeProto.STRING, s=v.encode("utf-8") if isinstance(v, str) else v)
    if kind is AttrKind.STRINGS and all(isinstance(x, str | bytes) for x in v):
        data = [x.encode("utf-8") if isinstance(x, str) else x for x in v]
        return AttributeProto(name=name, type=AttributeProto.STRINGS, strings=data)
    return helper.make_attribute(name, v, attr_type=_TO_ONNX[kind])


def tensor_to_array(t: onnx.TensorProto) -> np.ndarray:
    """The tensor's data as a numpy array; ValueError when its external data is not loaded or
    its data does not fit its element type and dims."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise ValueError(f"tensor '{t.name}' has external data that was not loaded")
    dims = tuple(t.dims[:])  # slicing a repeated field copies it in C; iterating it costs twice as much
    if dims and min(dims) < 0:
        raise ValueError(f"tensor '{t.name}' has a negative dimension ({list(dims)})")
    dtype = _RAW_DTYPES.get(t.data_type)
    try:
        if dtype is not None and not t.HasField("segment"):
            # numpy_helper.to_array's own paths for these types, without its per-call lookups
            if t.HasField("raw_data"):
                return np.frombuffer(t.raw_data, dtype=dtype).reshape(dims)
            field = _TYPED_FIELDS.get(t.data_type)
            if field is not None:  # its storage field holds this very type: no cast
                return np.array(getattr(t, field)[:], dtype=dtype).reshape(dims)
        return numpy_helper.to_array(t)
    except (ValueError, TypeError, KeyError) as e:  # unknown data_type (KeyError), size mismatch (ValueError)
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ValueError(f"tensor '{t.name}' does not hold its type's data ({why})") from None


_RAW_DTYPES = {} if sys.byteorder == "big" else {  # big-endian hosts swap bytes: onnx's own path
    int(k): helper.tensor_dtype_to_np_dtype(k) for k in (
        onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8,
        onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT8,
        onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL)}


_TYPED_FIELDS = {int(k): helper.tensor_dtype_to_field(k) for k in (
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT32, onnx.TensorProto.INT64)}
"""Element types whose typed field (float_data, ...) holds their own type (Constant values,
ConstantOfShape fills): read as `to_array` reads them, less its lookups."""

_RAW_CODES = {np.dtype(v): k for k, v in _RAW_DTYPES.items()}


def array_to_tensor(a: np.ndarray, name: str = "") -> onnx.TensorProto:
    """An ONNX tensor holding a copy of the array's data."""
    a = np.asarray(a)
    code = _RAW_CODES.get(a.dtype)
    if code is None or a.dtype.byteorder == ">":
        return numpy_helper.from_array(a, name)
    # numpy_helper.from_array's own fields for these types (the same bytes), without its lookups
    t = onnx.TensorProto(dims=a.shape, data_type=code, raw_data=a.tobytes())
    if name:
        t.name = name
    return t


def add_tensor(field: RepeatedCompositeFieldContainer[onnx.TensorProto], a: np.ndarray, name: str = "") -> None:
    """Append `array_to_tensor(a, name)` to `field` (a graph's initializers), built in place:
    appending a built tensor copies it, data and all."""
    a = np.asarray(a)
    code = _RAW_CODES.get(a.dtype)
    if code is None or a.dtype.byteorder == ">":
        field.append(numpy_helper.from_array(a, name))
    elif name:
        field.add(dims=a.shape, data_type=code, raw_data=a.tobytes(), name=name)
    else:
        field.add(dims=a.shape, data_type=code, raw_data=a.tobytes())
