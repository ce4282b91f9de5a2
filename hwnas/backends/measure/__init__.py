"""Measured latency: run an ONNX model on this machine with onnxruntime or TVM Relax and time it.

This is the "measured" cost model of the design: the ground truth that the lookup-table,
analytical and learned models are checked against. Both runtimes take the same inputs
(`random_inputs`) and return the same `Measurement`, so their figures compare directly.

`measure_onnxruntime` and `measure_tvm` load on first use: importing TVM takes seconds,
and a caller that only wants onnxruntime should not pay for it.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from hwnas.errors import MeasureError
from hwnas.files import read_npz

if TYPE_CHECKING:
    from hwnas.backends.measure.onnxruntime import measure_onnxruntime, run_onnxruntime
    from hwnas.backends.measure.tvm import measure_tvm, run_tvm
    from hwnas.ir.graph import Graph

__all__ = [
    "Measurement",
    "measure_onnxruntime",
    "measure_tvm",
    "load_npz",
    "random_inputs",
    "read_inputs",
    "run_onnxruntime",
    "run_tvm",
]

_LAZY = {
    "measure_onnxruntime": "hwnas.backends.measure.onnxruntime",
    "run_onnxruntime": "hwnas.backends.measure.onnxruntime",
    "measure_tvm": "hwnas.backends.measure.tvm",
    "run_tvm": "hwnas.backends.measure.tvm",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Measurement:
    """Wall-clock times of `repeats` runs after `warmup` untimed ones, and, for onnxruntime with
    profiling, each node's median kernel time per run (ORT's node names; fused nodes under the
    name ORT gives the fused kernel)."""

    runtime: str
    device: str
    threads: int
    warmup: int
    repeats: int
    times_s: tuple[float, ...]
    per_node_s: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.times_s:
            raise ValueError("a Measurement needs at least one timed run")

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.times_s))

    @property
    def p10_s(self) -> float:
        return float(np.percentile(self.times_s, 10))

    @property
    def p90_s(self) -> float:
        return float(np.percentile(self.times_s, 90))

    @property
    def min_s(self) -> float:
        return float(min(self.times_s))

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how much to trust the median; above ~0.2 the machine was busy."""
        return (self.p90_s - self.p10_s) / self.median_s if self.median_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "device": self.device,
            "threads": self.threads,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "median_s": self.median_s,
            "p10_s": self.p10_s,
            "p90_s": self.p90_s,
            "min_s": self.min_s,
            "spread": self.spread,
            "times_s": list(self.times_s),
            "per_node_s": dict(self.per_node_s),
        }


def as_model(model: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, str]:
    """The model and the name errors should give it (its path, or its graph's name)."""
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<model>"
    if isinstance(model, str | os.PathLike):
        from hwnas.frontends.onnx import load_model

        return load_model(model), str(model)
    raise TypeError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: old exporters also list every initializer as an input."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def random_inputs(model: onnx.ModelProto, seed: int = 0, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """One random tensor per graph input, of the declared element type; a symbolic or unknown dim
    becomes 1 (batch 1 is what latency figures quote). Integers are small and non-negative so that
    index-like inputs (Gather indices, token ids) stay in range. Inputs that would take more than
    `max_bytes` together (default: a quarter of this machine's memory) are refused, with their size,
    before anything is allocated."""
    rng = np.random.default_rng(seed)
    source = model.graph.name or "<model>"
    shapes = _input_shapes(model, source)
    limit = _memory_budget() if max_bytes is None else max_bytes
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes.values())
    if total > limit:
        biggest = max(shapes, key=lambda k: math.prod(shapes[k][0]) * shapes[k][1].itemsize)
        raise MeasureError(f"{source}: random inputs would take {_gb(total)} (input '{biggest}' has shape "
                           f"{shapes[biggest][0]}), more than the {_gb(limit)} allowed (a quarter of this "
                           f"machine's memory); measure it with smaller input dims")
    return {name: _random_array(rng, shape, dtype) for name, (shape, dtype) in shapes.items()}


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """An .npz's arrays by name, read without pickles; MeasureError when it cannot be read."""
    return read_npz(path, MeasureError, f"inputs '{path}'")


def read_inputs(arrays: dict[str, np.ndarray], graph: Graph, where: str = "inputs") -> dict[str, np.ndarray]:
    """`arrays` (as `load_npz` gives them) to feed `graph`: one per graph input, by name, each
    converted to its input's element type within the same kind (float to float, integer to
    integer). A missing or extra array, another kind or another rank is a MeasureError naming
    it; dims are checked where the graph fixes them."""
    names = [v.name for v in graph.inputs]
    missing, extra = [n for n in names if n not in arrays], [k for k in arrays if k not in names]
    if missing or extra:
        what = f"no array for input {', '.join(map(repr, missing))}" if missing else \
            f"array {', '.join(map(repr, extra))} is no input of the model"
        raise MeasureError(f"{where}: {what} (inputs: {', '.join(names)}; arrays: {', '.join(arrays) or 'none'})")
    out = {}
    for v in graph.inputs:
        a = arrays[v.name]
        if v.type is None or v.type.shape is None:
            raise MeasureError(f"{where}: input '{v.name}' has no known type and rank to check array '{v.name}' by")
        declared, dtype = v.type.shape, v.type.dtype.numpy
        fixed = [(d, n) for d, n in zip(declared, a.shape, strict=False) if isinstance(d, int)]
        if a.ndim != len(declared) or any(d != n for d, n in fixed):
            shown = "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in declared) + "]"
            raise MeasureError(f"{where}: array '{v.name}' has shape {list(a.shape)}, the input is {shown}")
        if a.dtype.kind != dtype.kind and not (a.dtype.kind in "iu" and dtype.kind in "iu"):
            raise MeasureError(f"{where}: array '{v.name}' is {a.dtype}, the input is {dtype}")
        out[v.name] = np.ascontiguousarray(a.astype(dtype, copy=False))
    return out


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def _memory_budget() -> int:
    """A quarter of physical memory (8 GB when the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 8 * 10**9


def _input_shapes(model: onnx.ModelProto, source: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each graph input's shape (symbolic and unknown dims as 1) and numpy dtype."""
    from hwnas.frontends.onnx import DYNAMIC_DIM

    shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for vi in graph_inputs(model):
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            raise MeasureError(f"{source}: input '{vi.name}' is a {kind or 'value of unknown type'}, not a tensor; "
                               "random inputs cannot be made for it (pass inputs=...)")
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise MeasureError(f"{source}: input '{vi.name}' has no declared rank; pass inputs=... to measure it")
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        except (KeyError, ValueError):
            raise MeasureError(f"{source}: input '{vi.name}' has an unknown element type ({tt.elem_type})") from None
        # A dynamic dim (as paddle2onnx writes it) is one, as a symbolic dim is.
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value != DYNAMIC_DIM else 1
                      for d in tt.shape.dim)
        if any(d < 0 for d in shape):
            raise MeasureError(f"{source}: input '{vi.name}' has a negative dimension {shape}")
        shapes[vi.name] = (shape, np.dtype(dtype))
    return shapes


def _random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 4, shape).astype(dtype)
    if dtype.kind in "OUS":
        return np.full(shape, "a", dtype=object)
    # float16/32/64 and ml_dtypes' bfloat16 and float8 types all convert from float32.
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)


def check_counts(*, threads: int, warmup: int, repeats: int) -> None:
    """Reject counts that would make a meaningless measurement, before any work."""
    if threads < 1:
        raise MeasureError(f"threads must be at least 1 (got {threads})")
    if warmup < 0:
        raise MeasureError(f"warmup must be 0 or more (got {warmup})")
    if repeats < 1:
        raise MeasureError(f"repeats must be at least 1 (got {repeats})")


def cpu_model() -> str:
    """This machine's CPU model name (/proc/cpuinfo where there is one): what a measured
    figure, a calibration or a benchmark result is recorded against."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
