"""Latency of an ONNX model under onnxruntime, and per-node times from its profiler.

Timed runs and profiled runs use separate sessions: the profiler writes an event per kernel,
which would inflate the wall-clock figures of small models.

Per-node names are onnxruntime's. For a node it keeps as is, that is the ONNX node's name.
Nodes it folds or removes (constant folding, Identity, Dropout) have no entry; nodes it fuses
(Conv+Relu, Conv+Add, MatMul+Add, ...) appear once, under the name onnxruntime gives the fused
kernel, and layout changes it inserts (NCHWc reorders) appear under names of their own. With
`optimization="disable"` the names are exactly the model's node names.
"""

from __future__ import annotations

import bisect
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from hwnas.backends.measure import Measurement, as_model, check_counts, random_inputs
from hwnas.backends.sessions import make_session, session_options
from hwnas.errors import MeasureError, first_line


def run_onnxruntime(model: onnx.ModelProto | str | os.PathLike, inputs: dict[str, np.ndarray] | None = None, *,
                    optimization: str = "all") -> list[np.ndarray]:
    """The model's outputs on one thread: the reference other runtimes are compared with."""
    proto, source = as_model(model)
    sess = make_session(proto, source, session_options(optimization=optimization))
    return _run(sess, source, random_inputs(proto) if inputs is None else inputs)


def measure_onnxruntime(model: onnx.ModelProto | str | os.PathLike, *, threads: int = 1, warmup: int = 10,
                        repeats: int = 50, profile: bool = False, device: str = "cpu",
                        inputs: dict[str, np.ndarray] | None = None, optimization: str = "all") -> Measurement:
    """Median and spread of `repeats` `sess.run` calls after `warmup`; with `profile`, also each
    node's median kernel time per run, from a second, profiled session.

    Each run feeds numpy arrays, so on CUDA the times include the copies to and from the device
    (as a caller of `sess.run` sees them), and the profiler times each CUDA kernel mostly by its launch:
    the kernels run asynchronously."""
    check_counts(threads=threads, warmup=warmup, repeats=repeats)
    proto, source = as_model(model)
    feeds = random_inputs(proto) if inputs is None else inputs
    sess = make_session(proto, source, session_options(threads=threads, optimization=optimization), device)
    for _ in range(warmup):
        _run(sess, source, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _run(sess, source, feeds)
        times.append(time.perf_counter() - t0)
    del sess
    per_node = _profile(proto, source, feeds, threads, warmup, repeats, optimization, device) if profile else {}
    return Measurement("onnxruntime", device, threads, warmup, repeats, tuple(times), per_node)


def _run(sess: ort.InferenceSession, source: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return sess.run(None, feeds)
    except Exception as e:
        raise MeasureError(f"{source}: onnxruntime cannot run the model ({first_line(e)})") from None


def _profile(proto: onnx.ModelProto, source: str, feeds: dict[str, np.ndarray], threads: int, warmup: int,
             repeats: int, optimization: str, device: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hwnas-ort-profile-") as tmp:
        so = session_options(threads=threads, optimization=optimization, profile_prefix=os.path.join(tmp, "ort"))
        sess = make_session(proto, source, so, device)
        for _ in range(warmup + repeats):
            _run(sess, source, feeds)
        trace = Path(sess.end_profiling())
        try:
            events = json.loads(trace.read_text())
        finally:
            trace.unlink(missing_ok=True)
    return per_node_medians(events, skip_runs=warmup)


def per_node_medians(events: list[dict], skip_runs: int = 0) -> dict[str, float]:
    """Median seconds per run of each node in an ORT trace ("<node>_kernel_time" events, µs),
    after its first `skip_runs` runs; a node that did not run in some run counts 0 there."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                  and e.get("name") == "model_run")[skip_runs:]
    if not runs:
        return {}
    starts = [r[0] for r in runs]
    per_run: list[dict[str, float]] = [defaultdict(float) for _ in runs]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i < 0 or e["ts"] > runs[i][1]:
            continue  # a warmup run, or outside any run
        per_run[i][e["name"][: -len("_kernel_time")]] += e["dur"] * 1e-6
    names = sorted({n for r in per_run for n in r})
    return {n: float(statistics.median(r.get(n, 0.0) for r in per_run)) for n in names}
