"""With `requantize="onnxruntime"` the C kernels round as onnxruntime's CPU kernels do: the
float Add kernel against onnxruntime's QLinearAdd on every pair of uint8 inputs, and whole
networks whose int8 outputs equal onnxruntime's run of the same QDQ model exactly."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.codegen import generate_c
from hwnas.codegen.c.harness import (
    WARNINGS,
    HostModel,
    arm_toolchain_missing,
    build_cortex_m7,
    build_host_library,
    run_qemu,
)
from hwnas.codegen.c.lower import qlinear_add_constants
from hwnas.ir.graph import Graph
from hwnas.passes.fold_constants import FoldConstants
from hwnas.passes.quantize import prepare_layers, quantize_layers
from hwnas.search.spaces.mobilenetv2 import MBConfig, build_ir
from hwnas.tasks.evaluate import run_model


class AddParams(ctypes.Structure):
    """hw_add_params of hwnas_kernels.h."""

    _fields_ = [("dims", ctypes.c_int32 * 4), ("stride_a", ctypes.c_int32 * 4), ("stride_b", ctypes.c_int32 * 4),
                *((f, ctypes.c_int32) for f in ("a_zp", "b_zp", "out_zp", "a_mult", "a_shift", "b_mult", "b_shift",
                                                "out_mult", "out_shift", "act_min", "act_max")),
                ("ratio_a", ctypes.c_float), ("ratio_b", ctypes.c_float), ("fixed", ctypes.c_float),
                ("scalar", ctypes.c_int32)]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """The runtime kernels built by gcc as a shared library."""
    folder = tmp_path_factory.mktemp("kernels")
    runtime = resources.files("hwnas.codegen.c") / "runtime"
    for name in ("hwnas_kernels.c", "hwnas_kernels.h"):
        (folder / name).write_text((runtime / name).read_text())
    subprocess.run([shutil.which("gcc") or "gcc", *WARNINGS, "-O2", "-shared", "-fPIC", "-o", "libk.so",
                    "hwnas_kernels.c", "-lm"], cwd=folder, check=True)
    lib = ctypes.CDLL(str(folder / "libk.so"))
    lib.hw_add_float.argtypes = [ctypes.c_void_p] * 4
    lib.hw_add_float.restype = None
    return lib


def qlinear_add(grids: list[tuple[float, int]], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """onnxruntime's uint8 a + b: a QDQ Add, which it runs as QLinearAdd."""
    (sa, za), (sb, zb), (sy, zy) = grids
    consts = [numpy_helper.from_array(np.array(v, t), k) for k, v, t in (
        ("sa", sa, np.float32), ("za", za, np.uint8), ("sb", sb, np.float32), ("zb", zb, np.uint8),
        ("sy", sy, np.float32), ("zy", zy, np.uint8))]
    nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
             helper.make_node("Add", ["fa", "fb"], ["s"]), helper.make_node("QuantizeLinear", ["s", "sy", "zy"], ["y"])]
    graph = helper.make_graph(nodes, "add", [helper.make_tensor_value_info("a", TensorProto.UINT8, list(a.shape)),
                                             helper.make_tensor_value_info("b", TensorProto.UINT8, list(b.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"a": a, "b": b})[0]


def c_add(kernels: ctypes.CDLL, grids: list[tuple[float, int]], a: np.ndarray, b: np.ndarray,
          scalar: int = 0) -> np.ndarray:
    """The C kernel's a + b (uint8 in and out, int8 inside), its constants from the lowering."""
    ratio_a, ratio_b, fixed = qlinear_add_constants(*grids)
    dims = (1,) * (4 - a.ndim) + a.shape
    full_b = (1,) * (4 - b.ndim) + b.shape
    strides_b, step = [0] * 4, 1
    for i in range(3, -1, -1):
        strides_b[i] = step if full_b[i] == dims[i] and dims[i] > 1 else 0
        step *= full_b[i]
    strides_a = [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1]
    p = AddParams(dims=(ctypes.c_int32 * 4)(*dims), stride_a=(ctypes.c_int32 * 4)(*strides_a),
                  stride_b=(ctypes.c_int32 * 4)(*strides_b), act_min=-128, act_max=127, ratio_a=float(ratio_a),
                  ratio_b=float(ratio_b), fixed=float(fixed), scalar=scalar)
    xa = np.ascontiguousarray((a.astype(np.int16) - 128).astype(np.int8))
    xb = np.ascontiguousarray((b.astype(np.int16) - 128).astype(np.int8))
    y = np.zeros(a.shape, np.int8)
    kernels.hw_add_float(ctypes.byref(p), xa.ctypes.data, xb.ctypes.data, y.ctypes.data)
    return (y.astype(np.int16) + 128).astype(np.uint8)


def test_add_equals_qlinear_add_on_every_input_pair(kernels: ctypes.CDLL) -> None:
    rng = np.random.default_rng(0)
    a, b = (m.reshape(1, 256, 256).astype(np.uint8) for m in np.meshgrid(np.arange(256), np.arange(256)))
    for _ in range(12):  # grids as calibration makes them, and some far apart
        grids = [(float(np.float32(rng.uniform(0.002, 0.2))), int(rng.integers(0, 256))) for _ in range(3)]
        np.testing.assert_array_equal(c_add(kernels, grids, a, b), qlinear_add(grids, a, b))


def test_add_with_a_per_channel_input_equals_qlinear_add(kernels: ctypes.CDLL) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (1, 16, 9, 9)).astype(np.uint8)
    b = rng.integers(0, 256, (1, 16, 1, 1)).astype(np.uint8)
    for _ in range(6):
        grids = [(float(np.float32(rng.uniform(0.002, 0.2))), int(rng.integers(0, 256))) for _ in range(3)]
        np.testing.assert_array_equal(c_add(kernels, grids, a, b, scalar=2), qlinear_add(grids, a, b))


def mobilenet(resolution: int, inputs: int) -> tuple[Graph, np.ndarray, np.ndarray]:
    """A MobileNetV2-0.35-like net (random weights) quantized on random inputs; test inputs."""
    graph = FoldConstants().run(build_ir(MBConfig(width=0.35, resolution=resolution, num_classes=10),
                                         seed=0)).graph
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(16, 3, resolution, resolution)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes, _ = prepare_layers(graph, "quantize")
        quantize_layers(graph, {n.name: (8, 8) for n in nodes}, calib={graph.inputs[0].name: calib})
    return graph, calib, rng.normal(size=(inputs, 3, resolution, resolution)).astype(np.float32)


@pytest.mark.slow
def test_onnxruntime_requantization_gives_onnxruntimes_outputs(tmp_path: Path) -> None:
    # At 144 px the fixed-point (CMSIS-NN) requantization rounds some of the millions of
    # layer outputs apart from onnxruntime's float one, and untrained blocks spread it.
    graph, calib, x = mobilenet(144, 6)
    fixed = generate_c(graph, calib={graph.inputs[0].name: calib})
    exact = generate_c(graph, calib={graph.inputs[0].name: calib}, requantize="onnxruntime")
    assert "mult_" in fixed.files["model.c"] and "mult_" not in exact.files["model.c"]
    assert "hw_add(" in fixed.files["model.c"] and "hw_add_float(" in exact.files["model.c"]
    assert exact.arena_bytes == fixed.arena_bytes
    ref = exact.output.quantize(run_model(graph, x, batch=16))
    out = HostModel(build_host_library(exact, tmp_path / "exact"), exact).run(exact.input.quantize(x))
    np.testing.assert_array_equal(out, ref)
    apart = HostModel(build_host_library(fixed, tmp_path / "fixed"), fixed).run(fixed.input.quantize(x))
    assert np.abs(apart.astype(np.int32) - ref.astype(np.int32)).max() > 0  # else this test shows nothing


@pytest.mark.skipif(arm_toolchain_missing() is not None, reason=f"Arm toolchain missing: {arm_toolchain_missing()}")
def test_onnxruntime_requantization_on_the_cortex_m7(tmp_path: Path) -> None:
    graph, calib, x = mobilenet(32, 2)  # soft-float: the FMA and rounding done without an FPU
    project = generate_c(graph, calib={graph.inputs[0].name: calib}, requantize="onnxruntime")
    run = run_qemu(build_cortex_m7(project, tmp_path), project, project.input.quantize(x))
    np.testing.assert_array_equal(run.outputs, project.output.quantize(run_model(graph, x, batch=16)))
