"""This machine's roofline, measured: the figures the `host-cpu` target describes.

A few seconds of onnxruntime kernels (through `hwnas.backends.sessions`, so the kernels are
the ones hwnas measures and compiles for, not numpy's BLAS) give the peak fp32 and int8 rates
(a 1024³ MatMul or MatMulInteger and a 3x3 convolution of 128 channels, the faster of each
pair), the depthwise efficiency (a 3x3 depthwise convolution's rate over a dense one of the same
shape), the per-kernel overhead (half a one-element Relu's `session.run`, whose whole time is taken off
every other kernel's) and the bandwidth of
each memory level (an Add whose three tensors fill half the level, or four times the largest
cache for DRAM; cache sizes from sysfs, the DRAM size from /proc/meminfo).

The result is cached as JSON (never a pickle) in `~/.cache/hwnas/host/`, one file per CPU
model, thread count, onnxruntime version and benchmark version: the first use on a machine
pays the seconds, later ones read the file. Delete it (or call `host_roofline(refresh=True)`)
to measure again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.measure import cpu_model
from hwnas.backends.sessions import session
from hwnas.errors import HwnasError, OutputError
from hwnas.files import write_atomic

CACHE_DIR = Path.home() / ".cache" / "hwnas" / "host"
BENCH_VERSION = 1
"""Bumped whenever the kernels or the way they are timed change: older cache files are then
measured again."""
DEFAULT_DURATION_S = 3.0
_MIN_RUNS = 3
_memo: dict[str, HostRoofline] = {}


@dataclass(frozen=True)
class MemoryBandwidth:
    """One measured memory level: its name (L2, L3, DRAM), capacity and streaming bandwidth."""

    name: str
    size_bytes: float
    bandwidth_bytes_per_s: float


@dataclass(frozen=True)
class HostRoofline:
    """What the microbenchmark measured on one machine, and with what."""

    machine: str
    """`hwnas.backends.measure.cpu_model()` of the machine measured."""
    threads: int
    ort_version: str
    bench_version: int
    peak_ops_per_s: dict[str, float]
    """fp32 and int8 operations (a MAC is two) per second: the best of GEMM and convolution."""
    depthwise_efficiency: float
    kernel_overhead_s: float
    memory: list[MemoryBandwidth]
    """Smallest level first; the last is DRAM."""
    kernels: dict[str, float]
    """Each kernel's own rate (ops/s, or bytes/s for the memory levels), for the record."""
    duration_s: float
    """Seconds the measurement took."""
    measured_at: str
    load_average: float = 0.0
    """The 1-minute load average as the measurement began: near or above the core count, other work
    shared the cores and the rates are low (delete the cache file to measure again)."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (what the cache file holds)."""
        return {"format": "hwnas-host-roofline", **asdict(self)}

    @staticmethod
    def from_json(data: dict[str, Any]) -> HostRoofline:
        """The inverse of `to_json`; KeyError or TypeError on a malformed file."""
        fields = {k: v for k, v in data.items() if k != "format"}
        fields["memory"] = [MemoryBandwidth(**m) for m in fields["memory"]]
        return HostRoofline(**fields)


def cache_key(threads: int) -> dict[str, Any]:
    """What a cached measurement must match to be reused here."""
    return {"machine": cpu_model(), "threads": threads, "ort_version": ort.__version__,
            "bench_version": BENCH_VERSION}


def cache_path(threads: int = 1, cache_dir: Path | None = None) -> Path:
    """The cache file for this machine, thread count and onnxruntime."""
    key = cache_key(threads)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (cache_dir or CACHE_DIR) / f"roofline-{digest}.json"


def host_roofline(threads: int = 1, *, duration_s: float = DEFAULT_DURATION_S, cache_dir: Path | None = None,
                  refresh: bool = False) -> HostRoofline:
    """This machine's roofline for onnxruntime on `threads` threads: from the cache when a file
    for this CPU, thread count and onnxruntime is there, else measured (about `duration_s`
    seconds) and cached. A cache that cannot be written is skipped: the figures are still used."""
    if threads < 1:
        raise HwnasError(f"threads must be at least 1 (got {threads})")
    path = cache_path(threads, cache_dir)
    memo_key = str(path)
    if not refresh:
        if memo_key in _memo:
            return _memo[memo_key]
        cached = _read_cache(path, cache_key(threads))
        if cached is not None:
            _memo[memo_key] = cached
            return cached
    measured = measure_host(threads, duration_s=duration_s)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(measured.to_json(), indent=1))
    except (OSError, OutputError):
        pass  # a read-only home: measure again next process rather than fail
    _memo[memo_key] = measured
    return measured


def _read_cache(path: Path, key: dict[str, Any]) -> HostRoofline | None:
    try:
        data = json.loads(path.read_text())
        r = HostRoofline.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: measure again
    if any(getattr(r, k) != v for k, v in key.items()):
        return None
    return r


def measure_host(threads: int = 1, *, duration_s: float = DEFAULT_DURATION_S) -> HostRoofline:
    """Run the microbenchmark now (no cache): about `duration_s` seconds of timed kernels."""
    t0 = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    levels = memory_levels()
    kernels: dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray], float]] = {
        "matmul_fp32": _matmul(False), "conv_fp32": _conv(128, 28, 1, False),
        "matmul_int8": _matmul(True), "conv_int8": _conv(128, 28, 1, True),
        "conv3x3_56": _conv(64, 56, 1, False), "depthwise3x3_56": _conv(64, 56, 64, False),
    }
    budget = duration_s / (len(kernels) + len(levels) + 1)
    empty_run = _best_time(*_relu()[:2], threads, budget)

    def net(t: float) -> float:
        # A kernel's time without session.run's own cost (the roofline adds the overhead apart).
        return max(t - empty_run, t / 2)

    rates = {name: work / net(_best_time(model, feeds, threads, budget))
             for name, (model, feeds, work) in kernels.items()}
    memory = []
    largest_cache = max((size for name, size in levels if name != "DRAM"), default=0)
    for name, size in levels:
        # Half a cache level stays in it; DRAM: four times the largest cache, 64-512 MiB.
        working_set = size // 2 if name != "DRAM" else min(max(4 * largest_cache, 64 * 2**20), 512 * 2**20)
        model, feeds, nbytes = _add(working_set)
        bw = nbytes / net(_best_time(model, feeds, threads, budget))
        rates[f"add_{name}"] = bw
        memory.append(MemoryBandwidth(name, float(size), bw))
    return HostRoofline(
        machine=cpu_model(), threads=threads, ort_version=ort.__version__, bench_version=BENCH_VERSION,
        peak_ops_per_s={"fp32": max(rates["matmul_fp32"], rates["conv_fp32"]),
                        "int8": max(rates["matmul_int8"], rates["conv_int8"])},
        depthwise_efficiency=min(1.0, rates["depthwise3x3_56"] / rates["conv3x3_56"]),
        kernel_overhead_s=empty_run / 2,  # a node inside a graph costs less than a whole run
        memory=memory, kernels=rates,
        duration_s=time.perf_counter() - t0, measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        load_average=load)


def memory_levels() -> list[tuple[str, int]]:
    """(name, bytes) of the caches from L2 up (sysfs; none where it is absent) and of DRAM."""
    levels: dict[int, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        try:
            level = int((d / "level").read_text())
            kind = (d / "type").read_text().strip()
            size = _parse_size((d / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if level >= 2 and kind in ("Unified", "Data"):
            levels[level] = size
    return [*((f"L{lv}", size) for lv, size in sorted(levels.items())), ("DRAM", _dram_bytes())]


def _parse_size(text: str) -> int:
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(text[:-1]) * scale[text[-1]] if text and text[-1] in scale else int(text)


def _dram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _best_time(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, budget_s: float) -> float:
    """The fastest of as many runs as fit in `budget_s` (at least a few), after one untimed run."""
    sess = session(model, threads=threads, source=f"host microbenchmark {model.graph.name}")
    sess.run(None, feeds)
    best, start, n = float("inf"), time.perf_counter(), 0
    while n < _MIN_RUNS or time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        sess.run(None, feeds)
        best = min(best, time.perf_counter() - t)
        n += 1
    return best


def _model(name: str, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           output: onnx.ValueInfoProto, inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, [output], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _matmul(int8: bool, n: int = 1024) -> tuple[onnx.ModelProto, dict[str, np.ndarray], float]:
    """An n³ MatMul (fp32) or MatMulInteger (uint8 x int8 -> int32): 2n³ operations."""
    rng = np.random.default_rng(0)
    if int8:
        w = numpy_helper.from_array(rng.integers(-127, 128, (n, n)).astype(np.int8), "w")
        x = rng.integers(0, 256, (n, n)).astype(np.uint8)
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        xi = helper.make_tensor_value_info("x", TensorProto.UINT8, [n, n])
        yi = helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])
    else:
        w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
        x = rng.standard_normal((n, n)).astype(np.float32)
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        xi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])
        yi = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    return _model(f"matmul_{'int8' if int8 else 'fp32'}", [node], [xi], yi, [w]), {"x": x}, 2.0 * n**3


def _conv(c: int, hw: int, group: int, int8: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray], float]:
    """A 3x3 convolution of c channels at hw x hw, padded (QLinearConv for int8)."""
    rng = np.random.default_rng(0)
    shape = [1, c, hw, hw]
    wshape = (c, c // group, 3, 3)
    attrs: dict[str, Any] = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": group}
    ops = 2.0 * hw * hw * c * (c // group) * 9
    if int8:
        inits = [numpy_helper.from_array(rng.integers(-127, 128, wshape).astype(np.int8), "w"),
                 numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
                 numpy_helper.from_array(np.array(128, np.uint8), "xz"),
                 numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
                 numpy_helper.from_array(np.array(0, np.int8), "wz"),
                 numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
                 numpy_helper.from_array(np.array(128, np.uint8), "yz")]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], **attrs)
        x = rng.integers(0, 256, shape).astype(np.uint8)
        elem = TensorProto.UINT8
    else:
        inits = [numpy_helper.from_array(rng.standard_normal(wshape).astype(np.float32), "w")]
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        x = rng.standard_normal(shape).astype(np.float32)
        elem = TensorProto.FLOAT
    name = f"conv{c}_{hw}_g{group}_{'int8' if int8 else 'fp32'}"
    model = _model(name, [node], [helper.make_tensor_value_info("x", elem, shape)],
                   helper.make_tensor_value_info("y", elem, shape), inits)
    return model, {"x": x}, ops


def _relu() -> tuple[onnx.ModelProto, dict[str, np.ndarray], float]:
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    model = _model("relu1", [helper.make_node("Relu", ["x"], ["y"])], [info[0]], info[1], [])
    return model, {"x": np.ones(1, np.float32)}, 0.0


def _add(working_set: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray], float]:
    """An Add whose two inputs and output together take `working_set` bytes; it moves them all once."""
    n = max(working_set // 12, 1024)
    info = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [n]) for v in ("a", "b", "y")]
    model = _model(f"add_{n}", [helper.make_node("Add", ["a", "b"], ["y"])], info[:2], info[2], [])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal(n).astype(np.float32), "b": rng.standard_normal(n).astype(np.float32)}
    return model, feeds, 12.0 * n
