"""Timing one kernel as it runs inside a model, with onnxruntime's profiler.

The wall-clock time of a single-kernel model is not the kernel's share of a whole model: it
adds the session's run overhead and the NCHWc reorders that onnxruntime puts around the
kernel, which inside a network happen once at the edges (a 3x3 conv of 16 channels at 8x8
takes 2.3 us in a chain and 10 us alone). The profiler times each kernel by itself, but its
own bookkeeping adds about 2 us a kernel, so `profiler_bias` measures that once (chains of 1
and 9 kernels timed with and without the profiler) and calibrations subtract it.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.measure import random_inputs
from hwnas.backends.sessions import make_session, session_options
from hwnas.calibrate.fusion import EDGE_OPS
from hwnas.calibrate.kernels import FLUSH_INPUT, MAX_FLUSH_MB, flush_elements

SKIPPED_OPS = ("ReorderInput", "ReorderOutput")
# What onnxruntime runs at the edges of an integer kernel model (into and out of uint8, NCHW to
# NHWC and back): inside an integer network these happen only where it meets float tensors, so an
# integer kernel is timed without them, and they are timed as edges of their own.


@dataclass(frozen=True)
class KernelTiming:
    """One kernel's timing: profiled seconds of its own nodes, wall-clock seconds per run, and
    the layout conversions around it."""

    profiled_s: float
    """Trimmed mean over runs of the summed profiler times of the kernel's own nodes."""
    events: int
    """How many onnxruntime nodes those are (each carries the profiler's overhead once)."""
    wall_s: float
    """Median seconds per run; on one thread the time the process ran (see `running_share`)."""
    runs: int
    reorders: tuple[tuple[int, int, int, int, float], ...] = ()
    """The layout conversions around the kernel: (to NCHWc, C, H, W, profiled seconds)."""
    edges: tuple[tuple[int, int, int, float], ...] = ()
    """The nodes of `EDGE_OPS` around an integer kernel: (index in EDGE_OPS, elements, last
    dimension, profiled seconds)."""


def time_kernel(model: onnx.ModelProto, *, threads: int = 1, warmup: int = 3, repeats: int = 40,
                budget_s: float = 0.08, edges: tuple[str, ...] = ()) -> KernelTiming:
    """Profile `model`: `warmup` untimed runs, then as many runs as fit in `budget_s` (at least
    10, at most `repeats`); nodes of the ops in `edges` are not the kernel's (`EDGE_OPS`)."""
    p = _profile(model, threads, warmup, repeats, budget_s, edges)
    run_events, names, reorders, share = p.runs, p.names, p.special, p.share
    kernel = [share[i] * sum(run.get(n, 0.0) for n in names) for i, run in enumerate(run_events)]

    def seconds(name: str) -> float:
        return trimmed_mean([share[i] * run.get(name, 0.0) for i, run in enumerate(run_events)])

    conversions = tuple((int(op == "ReorderInput"), *shape, seconds(name))
                        for name, (op, shape) in sorted(reorders.items()) if op in SKIPPED_OPS)
    edge_nodes = tuple((EDGE_OPS.index(op), shape[0], shape[1], seconds(name))
                       for name, (op, shape) in sorted(reorders.items()) if op in EDGE_OPS)
    running = [min(w, b) for w, b in zip(p.wall, p.busy, strict=True)] if threads == 1 else p.wall
    return KernelTiming(trimmed_mean(kernel), len(names), float(statistics.median(running)), len(p.wall), conversions,
                        edge_nodes)


@dataclass(frozen=True)
class _Profiled:
    runs: list[dict[str, float]]
    names: set[str]
    special: dict[str, tuple[str, tuple[int, int, int]]]
    share: list[float]
    wall: list[float]
    busy: list[float]


def _profile(model: onnx.ModelProto, threads: int, warmup: int, repeats: int, budget_s: float,
             edges: tuple[str, ...] = ()) -> _Profiled:
    """`warmup` untimed runs, then as many runs as fit in `budget_s` (at least 10, at most
    `repeats`), profiled: each node's seconds per run (`split_runs`) and the running shares."""
    feeds = kernel_inputs(model)
    with tempfile.TemporaryDirectory(prefix="hwnas-calib-") as tmp:
        so = session_options(threads=threads, profile_prefix=os.path.join(tmp, "k"))
        sess = make_session(model, "kernel", so)
        t0 = time.perf_counter()
        for _ in range(max(1, warmup)):
            sess.run(None, feeds)
        per_run = (time.perf_counter() - t0) / max(1, warmup)
        runs = int(min(repeats, max(10, budget_s / max(per_run, 1e-7))))
        wall, busy = [], []
        for _ in range(runs):
            t, c = time.perf_counter(), time.thread_time()
            sess.run(None, feeds)
            wall.append(time.perf_counter() - t)
            busy.append(time.thread_time() - c)
        trace = Path(sess.end_profiling())
        events = json.loads(trace.read_text())
    run_events, names, special = split_runs(events, skip_runs=max(1, warmup), edges=edges)
    return _Profiled(run_events, names, special, running_share(wall, busy, threads, len(run_events)), wall, busy)


@dataclass(frozen=True)
class NetworkTiming:
    """A whole network's run, node by node (`time_network`)."""

    nodes: dict[str, float]
    """Seconds of each onnxruntime node inside the network, by node name (layout conversions
    apart), the profiler's own time taken off."""
    reorders: tuple[tuple[int, int, int, int, float], ...]
    """The layout conversions, as `KernelTiming.reorders` gives them: (to NCHWc, C, H, W, seconds)."""
    wall_s: float
    """Seconds per run without the profiler (trimmed mean, scaled by the running share)."""
    overhead_s: float
    """What the profiler added to each node here: its nodes' summed times less `wall_s`, per node."""


def time_network(model: onnx.ModelProto, *, threads: int = 1, bias_s: float = 0.0, warmup: int = 3,
                 repeats: int = 30, budget_s: float = 0.4) -> NetworkTiming:
    """A whole network profiled as `time_kernel` profiles one kernel, and timed again without the
    profiler: the profiler's own time per node (about 2 us, more than a small node takes) is what
    its nodes' times add up to beyond the unprofiled run, spread evenly over them, so that the
    nodes' times sum to the network's. On a large network that difference is within the two
    runs' noise, so it is kept between half and three times `bias_s` (`profiler_bias`, measured
    on chains of kernels: 1.8 us on the Xeon, where small networks show 2.5-3)."""
    p = _profile(model, threads, warmup, repeats, budget_s)

    def seconds(name: str) -> float:
        return trimmed_mean([p.share[i] * run.get(name, 0.0) for i, run in enumerate(p.runs)])

    raw = {name: seconds(name) for name in p.names}
    conversions = {name: seconds(name) for name, (op, _) in p.special.items() if op in SKIPPED_OPS}
    per_run = statistics.median(p.wall) if p.wall else 1e-3
    wall = _wall(model, threads, runs=int(min(200, max(10, budget_s / max(per_run, 1e-7)))), warmup=warmup)
    total, count = sum(raw.values()) + sum(conversions.values()), len(raw) + len(conversions)
    overhead = min(max((total - wall) / count, 0.5 * bias_s), 3.0 * bias_s) if count else 0.0
    nodes = {name.removesuffix("_kernel_time"): max(t - overhead, 0.0) for name, t in raw.items()}
    reorders = tuple((int(p.special[name][0] == "ReorderInput"), *p.special[name][1], max(t - overhead, 0.0))
                     for name, t in sorted(conversions.items()))
    return NetworkTiming(nodes, reorders, wall, overhead)


def running_share(wall: list[float], busy: list[float], threads: int, n: int) -> list[float]:
    """Per run, the share of its wall-clock time the process was running: on one thread,
    onnxruntime runs every kernel on the calling thread, so that thread's CPU time over the
    wall time is what a busy machine left it (about 1 on an idle one, 0.25 at a load of 8 on
    2 cores). Profiled kernel times are scaled by it, so a calibration measured on a loaded
    machine describes the machine, not the load. With more threads the pool's work is not
    the caller's: 1 (wall clock as it is). `n` runs are wanted; a count that does not match
    the timed runs gets their median share."""
    if threads != 1 or not wall:
        return [1.0] * n
    shares = [min(1.0, b / w) if w > 0 else 1.0 for w, b in zip(wall, busy, strict=True)]
    if len(shares) != n:
        shares = [float(statistics.median(shares))] * n
    return shares


_FLUSH: list[np.ndarray] = []


PATCH = 7
"""Side of the box filter `patchy` smooths with."""


def patchy(x: np.ndarray) -> np.ndarray:
    """`x` box-filtered over its last two axes (PATCH x PATCH) and standardized: signs half and
    half as in `x`, but in patches, as a feature map has them (about 17% of neighbours along a
    row differ in sign, against half for independent draws)."""
    from scipy.ndimage import uniform_filter

    size = (1,) * (x.ndim - 2) + (PATCH, PATCH) if x.ndim >= 2 else (PATCH,)
    y = uniform_filter(x.astype(np.float64), size=size)
    return ((y - y.mean()) / (y.std() or 1.0)).astype(x.dtype)


def kernel_inputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Random inputs; an input a PRelu reads is `patchy` (onnxruntime's CPU PRelu branches on each
    element's sign, so independent signs, which no network feeds it, would price its worst case:
    8.8x a one-signed input against 4.7x in patches, tools/bench/data_dependence.py); the
    cache-flushing input is a view of one shared buffer (no copy, no fresh random numbers for
    tens of megabytes per kernel)."""
    flush = [i for i in model.graph.input if i.name == FLUSH_INPUT]
    rest = model
    if flush:
        rest = onnx.ModelProto()
        rest.CopyFrom(model)
        del rest.graph.input[:]
        rest.graph.input.extend(i for i in model.graph.input if i.name != FLUSH_INPUT)
    feeds = random_inputs(rest)
    for name in {n.input[0] for n in model.graph.node if n.op_type == "PRelu" and n.input} & set(feeds):
        feeds[name] = patchy(feeds[name])
    if flush:
        n = flush[0].type.tensor_type.shape.dim[0].dim_value
        if not _FLUSH or _FLUSH[0].size < n:
            _FLUSH[:] = [np.ones(max(n, flush_elements(MAX_FLUSH_MB)), np.float32)]
        feeds[FLUSH_INPUT] = _FLUSH[0][:n]
    return feeds


def split_runs(events: list[dict], skip_runs: int, edges: tuple[str, ...] = (),
               ) -> tuple[list[dict[str, float]], set[str], dict[str, tuple[str, tuple[int, int, int]]]]:
    """Seconds per node per run (after `skip_runs`), the kernel's own node names (not reorders,
    not `aux_` helpers, not ops in `edges`), and the reorder nodes with their op and (C, H, W)
    and the nodes of `edges` with their op and (elements, last dimension) of their input."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    per_run: list[dict[str, float]] = [{} for _ in runs]
    names: set[str] = set()
    reorders: dict[str, tuple[str, tuple[int, int, int]]] = {}
    starts = [r[0] for r in runs]
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or not runs:
            continue
        i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if i < 0 or e["ts"] > runs[i][1]:
            continue
        per_run[i][name] = per_run[i].get(name, 0.0) + e["dur"] * 1e-6
        args = e.get("args", {})
        op = args.get("op_name")
        if op in SKIPPED_OPS:
            key = "input_type_shape" if op == "ReorderInput" else "output_type_shape"
            dims = next(iter(args.get(key, [{}])[0].values()), [1, 1, 1, 1])
            n, c, h, w = (list(dims[:4]) + [1, 1, 1, 1])[:4]
            reorders[name] = (op, (c, n * h, w))  # the batch folded into the rows, as `fusion` prices it
        elif op in edges:  # any of them, aux_ included: a Quantize of n elements is one, whoever reads it
            dims = next(iter(args.get("input_type_shape", [{}])[0].values()), [1])
            reorders[name] = (op, (int(np.prod(dims)), int(dims[-1]) if dims else 1, 0))
        elif "aux_" not in name and op not in edges:
            names.add(name)
    return per_run or [{}], names, reorders


def trimmed_mean(xs: list[float], cut: float = 0.2) -> float:
    """Mean of the middle of the sorted values: robust to a busy machine, and finer than the
    profiler's 1 us resolution, which a median would keep."""
    s = sorted(xs)
    k = int(len(s) * cut)
    mid = s[k: len(s) - k] or s
    return float(sum(mid) / len(mid))


def profiler_bias(threads: int = 1) -> float:
    """Seconds the profiler adds to each kernel it times (see the module docstring)."""
    biases = []
    for kind in ("conv", "relu", "dw"):
        one, nine = _chain(1, kind), _chain(9, kind)
        slope = (_wall(nine, threads) - _wall(one, threads)) / 8
        t = time_kernel(nine, threads=threads, warmup=20, repeats=300, budget_s=0.2)
        biases.append(t.profiled_s / max(t.events, 1) - slope)
    return max(0.0, float(statistics.median(biases)))


def _wall(model: onnx.ModelProto, threads: int, runs: int = 400, warmup: int = 50) -> float:
    """Seconds per run without the profiler: trimmed mean of `runs` after `warmup`, scaled by the
    running share."""
    sess = make_session(model, "kernel", session_options(threads=threads))
    feeds = kernel_inputs(model)
    for _ in range(warmup):
        sess.run(None, feeds)
    times, busy = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.thread_time()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
        busy.append(time.thread_time() - c)
    share = running_share(times, busy, threads, runs)
    return trimmed_mean([t * k for t, k in zip(times, share, strict=True)], 0.3)


def _chain(n: int, kind: str, c: int = 16, h: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i in range(n):
        if kind == "relu":
            nodes.append(helper.make_node("Relu", [cur], [f"t{i}"]))
        else:
            g = c if kind == "dw" else 1
            k = 3 if kind == "dw" else 1
            inits.append(numpy_helper.from_array((rng.standard_normal((c, c // g, k, k)) * 0.1).astype(np.float32),
                                                 f"w{i}"))
            nodes.append(helper.make_node("Conv", [cur, f"w{i}"], [f"t{i}"], kernel_shape=[k, k], pads=[k // 2] * 4,
                                          group=g))
        cur = f"t{i}"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])
    y = helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, c, h, h])
    graph = helper.make_graph(nodes, "chain", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
