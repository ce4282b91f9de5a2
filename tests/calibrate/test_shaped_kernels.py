"""Kernels that are not square 2-D convs: 1-D convs (speech, audio and byte-sequence models),
(k, 1) convs over one-column images, rectangular images, kernels and strides (text lines),
reductions over an inner or the innermost axis, and gemms with rows or with weights beyond the
caches. Built, run by onnxruntime, and featurized as `estimate` sees them in real models."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.backends.cost.base import node_work
from hwnas.backends.measure.onnxruntime import run_onnxruntime
from hwnas.backends.target import load_target
from hwnas.calibrate.features import OP_CODES, featurize
from hwnas.calibrate.kernels import MAX_MACS, REDUCE_OPS, conv_geometry, conv_macs, prepare, sample_spec
from hwnas.calibrate.timing import time_kernel
from hwnas.ir.graph import Graph

BASE = {"family": "conv", "cin": 32, "cout": 64, "k": 5, "stride": 1, "h": 128, "w": 1, "group": 1, "pad": 2,
        "act": None, "residual": False}


def _main(graph: Graph):  # type: ignore[no-untyped-def]
    return next(n for n in graph.nodes if n.name.startswith("k_main"))


def _features(graph: Graph) -> tuple[str, tuple[float, ...]]:
    target = load_target("host-cpu")
    f = featurize(node_work(_main(graph), target, target.roofline.peak_ops_per_s, graph))
    assert f is not None
    return f.group, f.values


def test_one_dimensional_and_one_column_convs_run_and_are_told_apart() -> None:
    """The same (k, 1) conv over a sequence, as Conv1d writes it (rank 3) and as a 2-D conv over
    a one-column image (magika's form): onnxruntime runs both with the shapes the IR infers, and
    their features differ (rank; NCHWc or im2col in onnxruntime), not their work."""
    seen = {}
    for spec in ({**BASE, "rank": 3, "kw": 1, "sw": 1, "pad_w": 0}, {**BASE, "kw": 1, "sw": 1, "pad_w": 0}):
        graph, model = prepare(spec)
        main = _main(graph)
        geo = conv_geometry(spec)
        assert main.op == "Conv" and main.outputs[0].type.shape == tuple(geo.out)
        (y,) = run_onnxruntime(model)
        assert y.shape == tuple(geo.out) and np.isfinite(y).all()
        seen[spec.get("rank", 4)] = _features(graph)
    assert seen[3][0] == seen[4][0] == "conv"
    assert seen[3][1] != seen[4][1] and seen[3][1][-3:] == (3.0, 1.0, 5.0) and seen[4][1][-3:] == (4.0, 1.0, 5.0)
    assert conv_macs({**BASE, "rank": 3}) == 64 * 128 * 32 * 5


def test_rectangular_kernels_and_strides() -> None:
    """A (1, 3) kernel with a (2, 1) stride on a wide image, as OCR recognizers have."""
    spec = {**BASE, "k": 1, "kw": 3, "stride": 2, "sw": 1, "pad": 0, "pad_w": 1, "h": 12, "w": 80}
    graph, model = prepare(spec)
    assert conv_geometry(spec).out == [1, 64, 6, 80]
    assert _main(graph).attr_ints("kernel_shape") == [1, 3] and _main(graph).attr_ints("strides") == [2, 1]
    assert run_onnxruntime(model)[0].shape == (1, 64, 6, 80)
    assert time_kernel(model, threads=1, warmup=1, repeats=3, budget_s=0.02).profiled_s > 0


def test_sampled_shaped_convs_stay_within_the_kernel_limits() -> None:
    """Some float conv and depthwise kernels of a calibration are drawn non-square, within the
    square kernels' size limits; the rest of the calibration's kernels are as before."""
    specs = [sample_spec(0, i) for i in range(600)]
    shaped = [s for s in specs if s["family"] in ("conv", "depthwise") and "kw" in s]
    assert any(s.get("rank") == 3 for s in shaped) and any(s.get("rank", 4) == 4 for s in shaped)
    for s in shaped:
        out = conv_geometry(s).out
        assert min(out) >= 1 and conv_macs(s) <= 2.0e9 and s["cin"] * s["h"] * s["w"] <= 3 * 2**20
        assert not s["residual"] and (s["group"] == 1 or s["group"] == s["cin"] or s["cin"] % s["group"] == 0)


@pytest.mark.parametrize("axes,inner", [([2], 1), ([1], 256)])
def test_reductions_are_featurized_by_the_axis_they_reduce(axes: list[int], inner: int) -> None:
    """magika's layer norm sums a [1, 512, 256] tensor over its middle axis, which onnxruntime
    reads with a stride, several times slower than over the last: the features carry how many
    elements fold into each output and that stride."""
    spec = {"family": "other", "op": "ReduceSum", "shape": [1, 512, 256], "axes": axes, "keepdims": 0}
    graph, model = prepare(spec)
    assert run_onnxruntime(model)[0].shape == ((1, 512) if axes == [2] else (1, 256))
    group, values = _features(graph)
    assert group == "other" and values[0] == OP_CODES["ReduceSum"]
    assert values[-2:] == pytest.approx((np.log(256 if axes == [2] else 512), np.log(inner)))
    ops = {s["op"] for s in (sample_spec(0, i) for i in range(2000)) if s["family"] == "other"}
    assert set(REDUCE_OPS) <= ops


def test_sampled_gemms_have_rows_and_weights_beyond_the_caches() -> None:
    """Some float gemms of a calibration stream 24-512 MB of weights once (one row: the
    classifiers of AlexNet, ZFNet, VGG), some float and integer ones run 2-512 rows (a
    sequence's steps), within the MAC limit; the others keep their one row and their sizes."""
    specs = [sample_spec(0, i) for i in range(3000)]
    gemms = [s for s in specs if s["family"] in ("gemm", "gemm_int8")]
    large = [s for s in gemms if s["family"] == "gemm" and s["k"] * s["n"] * 4 > 24 * 2**20 and s["m"] == 1]
    assert len(large) >= 10
    assert max(s["k"] * s["n"] * 4 for s in large) > 256 * 2**20
    rows = [s for s in gemms if s["m"] > 1]
    assert {s["family"] for s in rows} == {"gemm", "gemm_int8"} and any(s.get("dynamic") for s in rows)
    assert all(2 <= s["m"] <= 512 and s["m"] * s["k"] * s["n"] <= MAX_MACS for s in rows)
    assert sum(s["m"] == 1 for s in gemms) > len(gemms) / 2


@pytest.mark.parametrize("dynamic", [False, True])
def test_an_integer_gemm_with_rows_is_built_and_run(dynamic: bool) -> None:
    """An 8-bit gemm of 24 rows, as hwnas's QDQ emission (calibrated on as many samples as it
    has rows) and as onnxruntime's dynamic quantization writes it, runs to a [24, n] output."""
    spec = {"family": "gemm_int8", "op": "Gemm", "m": 24, "k": 96, "n": 40, "act": None, "flush_mb": 0.0,
            **({"dynamic": True} if dynamic else {})}
    graph, model = prepare(spec)
    assert run_onnxruntime(model)[0].shape == (24, 40)
    group, values = _features(graph)
    assert values[:3] == (24.0, 96.0, 40.0)
