"""Measured latency: real onnxruntime sessions and real TVM builds on tiny models.

Timing figures are checked only for what holds on a busy machine too (positive, ordered,
per-node sums of the right size); what must be exact is the plumbing: thread counts,
node names, output parity, and one-line errors.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.measure import Measurement, measure_onnxruntime, random_inputs
from hwnas.backends.measure.onnxruntime import run_onnxruntime
from hwnas.backends.sessions import make_session, session_options
from hwnas.cli import main
from hwnas.errors import HwnasError, MeasureError, ModelLoadError

ROOT = Path(__file__).resolve().parents[2]
SMALL_CNN = ROOT / "examples" / "small_cnn.onnx"


def tiny_model(batch: int | str = "N") -> onnx.ModelProto:
    """Conv -> Relu -> Reshape -> MatMul -> Add: kernels big enough (~25 µs) to time, and two fusions
    onnxruntime makes (Conv+Relu, MatMul+Add)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((32 * 16 * 16, 64)).astype(np.float32) * 0.01, "W2"),
        numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "B2"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "W2"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "B2"], ["y"], name="add"),
    ]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def assert_one_line(e: BaseException, *names: str) -> None:
    assert isinstance(e, HwnasError)
    msg = str(e)
    assert "\n" not in msg and len(msg) < 500, msg
    for name in names:
        assert name in msg, msg


# --- Measurement and inputs ---------------------------------------------------------------


def test_measurement_statistics() -> None:
    m = Measurement("onnxruntime", "cpu", 1, 2, 5, (0.005, 0.001, 0.002, 0.003, 0.004))
    assert m.median_s == pytest.approx(0.003)
    assert m.min_s == pytest.approx(0.001)
    assert m.p10_s == pytest.approx(0.0014)  # linear interpolation, as numpy.percentile
    assert m.p90_s == pytest.approx(0.0046)
    assert m.spread == pytest.approx((0.0046 - 0.0014) / 0.003)
    j = m.to_json()
    assert json.loads(json.dumps(j)) == j
    assert {"runtime", "device", "threads", "warmup", "repeats", "median_s", "p10_s", "p90_s", "min_s", "spread",
            "times_s", "per_node_s"} <= set(j)
    with pytest.raises(ValueError):
        Measurement("tvm", "cpu", 1, 0, 0, ())


def test_random_inputs_dtypes_and_symbolic_dims() -> None:
    inputs = [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 3]),
              helper.make_tensor_value_info("h", TensorProto.FLOAT16, [2, None]),
              helper.make_tensor_value_info("i", TensorProto.INT64, [4]),
              helper.make_tensor_value_info("b", TensorProto.BOOL, []),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])]  # also an initializer: not fed
    g = helper.make_graph([helper.make_node("Identity", ["f"], ["o"])], "g", inputs,
                          [helper.make_tensor_value_info("o", TensorProto.FLOAT, ["N", 3])],
                          [numpy_helper.from_array(np.zeros(2, np.float32), "w")])
    feeds = random_inputs(helper.make_model(g))
    assert sorted(feeds) == ["b", "f", "h", "i"]
    assert feeds["f"].shape == (1, 3) and feeds["f"].dtype == np.float32
    assert feeds["h"].shape == (2, 1) and feeds["h"].dtype == np.float16
    assert feeds["i"].dtype == np.int64 and feeds["i"].min() >= 0
    assert feeds["b"].shape == () and feeds["b"].dtype == np.bool_
    np.testing.assert_array_equal(random_inputs(helper.make_model(g))["f"], feeds["f"])  # seeded


def test_random_inputs_refuses_non_tensor_input() -> None:
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("SequenceLength", ["s"], ["n"])], "seqs", [seq],
                          [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    with pytest.raises(MeasureError) as e:
        random_inputs(helper.make_model(g))
    assert_one_line(e.value, "seqs", "'s'", "sequence_type", "inputs=")


# --- onnxruntime --------------------------------------------------------------------------


def test_onnxruntime_measures_small_cnn() -> None:
    m = measure_onnxruntime(SMALL_CNN, warmup=2, repeats=20)
    assert (m.runtime, m.device, m.threads, m.warmup, m.repeats) == ("onnxruntime", "cpu", 1, 2, 20)
    assert len(m.times_s) == 20 and m.per_node_s == {}
    assert 0 < m.min_s <= m.p10_s <= m.median_s <= m.p90_s < 1.0


def test_per_node_names_are_the_nodes_and_sum_to_the_run() -> None:
    model = tiny_model()
    m = measure_onnxruntime(model, repeats=30, profile=True, optimization="disable")
    assert set(m.per_node_s) == {n.name for n in model.graph.node}
    assert m.per_node_s["conv"] > m.per_node_s["relu"]
    # Kernel times leave out the session's own overhead, and the profiler adds a little.
    assert 0.5 * m.median_s < sum(m.per_node_s.values()) < 1.5 * m.median_s


def test_per_node_names_after_fusion_and_no_trace_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = tiny_model()
    m = measure_onnxruntime(model, repeats=10, profile=True, optimization="extended")
    names = {n.name for n in model.graph.node}
    # Relu runs inside the Conv kernel; MatMul+Add becomes one kernel named after the MatMul.
    assert "relu" not in m.per_node_s and "add" not in m.per_node_s
    assert "conv" in m.per_node_s and "matmul/MatMulAddFusion" in m.per_node_s
    assert all(k in names or k.split("/")[0] in names for k in m.per_node_s)
    assert list(tmp_path.iterdir()) == []  # the profiler's trace file is gone
    assert not list(Path.cwd().glob("onnxruntime_profile*.json"))


def test_threads_reach_the_session() -> None:
    so = session_options(threads=2, optimization="basic")
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    model = onnx.load(SMALL_CNN)

    def os_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    before = os_threads()
    one = make_session(model, "m", session_options(threads=1))
    with_one = os_threads()
    two = make_session(model, "m", session_options(threads=2))
    assert two.get_session_options().intra_op_num_threads == 2
    assert with_one == before and os_threads() == before + 1  # ORT's pool: the caller plus threads-1 workers
    del one, two
    assert measure_onnxruntime(model, threads=2, warmup=1, repeats=3).threads == 2


def test_onnxruntime_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as e:
        measure_onnxruntime(tmp_path / "missing.onnx")
    assert_one_line(e.value, "missing.onnx", "no such file")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError) as e:
        measure_onnxruntime(corrupt)
    assert_one_line(e.value, str(corrupt))
    g = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="acme")], "custom",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)]), path)
    with pytest.raises(MeasureError) as e:
        measure_onnxruntime(path)
    assert_one_line(e.value, str(path), "onnxruntime cannot load")
    with pytest.raises(MeasureError, match="repeats must be at least 1"):
        measure_onnxruntime(SMALL_CNN, repeats=0)
    with pytest.raises(MeasureError, match="unknown optimization level 'max'"):
        measure_onnxruntime(SMALL_CNN, optimization="max")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_onnxruntime_cuda_unavailable() -> None:
    with pytest.raises(MeasureError) as e:
        measure_onnxruntime(SMALL_CNN, device="cuda")
    assert_one_line(e.value, "small_cnn.onnx", "CUDAExecutionProvider")


# --- TVM ----------------------------------------------------------------------------------


def test_tvm_builds_small_cnn_and_matches_onnxruntime() -> None:
    from hwnas.backends.measure.tvm import build_tvm

    model = onnx.load(SMALL_CNN)
    feeds = random_inputs(model, seed=3)
    program = build_tvm(model, inputs=feeds)
    expected = run_onnxruntime(model, feeds)
    got = program.outputs()
    assert len(got) == len(expected) == 1
    np.testing.assert_allclose(got[0], expected[0], atol=1e-4)


def test_tvm_measures_with_symbolic_batch_and_threads() -> None:
    from tvm.runtime import num_threads

    from hwnas.backends.measure.tvm import cpu_threads, measure_tvm, run_tvm

    model = tiny_model("N")  # the batch dim is fixed to 1 before TVM sees it
    np.testing.assert_allclose(run_tvm(model)[0], run_onnxruntime(model)[0], atol=1e-4, rtol=1e-5)
    affinity = os.sched_getaffinity(0)
    before = num_threads()
    m = measure_tvm(model, threads=1, warmup=1, repeats=5)
    assert (m.runtime, m.device, m.threads, m.repeats, m.per_node_s) == ("tvm", "cpu", 1, 5, {})
    assert 0 < m.min_s <= m.median_s
    with cpu_threads(2):
        assert num_threads() == 2
    assert num_threads() == before
    assert os.sched_getaffinity(0) == affinity  # TVM's pool did not pin this thread to one core


def test_tvm_errors_are_one_line(tmp_path: Path) -> None:
    import tvm

    from hwnas.backends.measure.tvm import measure_tvm

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 1, 4])
    w = numpy_helper.from_array(np.ones((1, 12, 4), np.float32), "W")
    r = numpy_helper.from_array(np.ones((1, 12, 3), np.float32), "R")
    g = helper.make_graph([helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=3)], "lstm", [x],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [5, 1, 1, 3])], [w, r])
    path = tmp_path / "lstm.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(MeasureError) as e:  # onnxruntime runs it; Relax's importer does not take LSTM
        measure_tvm(path)
    assert_one_line(e.value, str(path), "TVM cannot import", "LSTM")
    with pytest.raises(ModelLoadError) as e:
        measure_tvm(tmp_path / "missing.onnx")
    assert_one_line(e.value, "missing.onnx")
    if not tvm.cuda(0).exist:
        with pytest.raises(MeasureError) as e:
            measure_tvm(SMALL_CNN, target="cuda")
        assert_one_line(e.value, "small_cnn.onnx", "no cuda device")


# --- hwnas measure ------------------------------------------------------------------------


def test_cli_table_both_runtimes_and_per_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    assert main(["measure", str(path), "--runtime", "both", "--per-node", "--repeats", "5", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    for text in ("onnxruntime", "tvm", "median ms", "p10 ms", "p90 ms", "spread", "slowest nodes", "share",
                 "matmul/MatMulAddFusion", "tvm: no per-node times"):
        assert text in out, text


def test_cli_per_node_names_the_model_nodes_of_an_nchwc_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    # onnxruntime names an NCHWc kernel after the output it computes: the table says which of
    # the model's nodes it runs (the conv, its folded BatchNormalization, its fused activation).
    assert main(["measure", str(SMALL_CNN), "--per-node", "--repeats", "3", "--warmup", "1"]) == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in capsys.readouterr().out.splitlines() if line.count("│") >= 4}
    assert rows["/body/body.2/Relu_output_0_nchwc"] == "Conv+BatchNormalization+Relu (NCHWc kernel)"
    assert rows["/body/body.9/GlobalAveragePool_output_0_nchwc"] == "GlobalAveragePool (NCHWc kernel)"


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", str(SMALL_CNN), "--json", "--repeats", "4", "--threads", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == str(SMALL_CNN) and doc["target"] == "host-cpu"
    (m,) = doc["measurements"]
    assert (m["runtime"], m["device"], m["threads"], m["repeats"], len(m["times_s"])) == ("onnxruntime", "cpu", 2, 4, 4)
    assert {"median_s", "p10_s", "p90_s", "min_s", "spread", "per_node_s", "warmup"} <= set(m)


def test_cli_reads_hwnas_dumps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", str(SMALL_CNN), "--weights", "-o", str(tmp_path / "g.hwnas")]) == 0
    assert main(["measure", str(tmp_path / "g.hwnas"), "--json", "--repeats", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["measurements"][0]["median_s"] > 0


def _host_cpu_copy(tmp_path: Path, old: str, new: str) -> Path:
    from hwnas.backends.target import TARGETS_DIR

    text = (TARGETS_DIR / "host-cpu.toml").read_text()
    assert old in text
    path = tmp_path / "host-cpu.toml"
    path.write_text(text.replace(old, new))
    return path


def test_cli_runtime_and_tvm_target_come_from_the_target_file(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    tvm_host = _host_cpu_copy(tmp_path, 'runtime = "onnxruntime"', 'runtime = "tvm"')
    assert main(["measure", str(SMALL_CNN), "--target", str(tvm_host), "--json", "--repeats", "2"]) == 0
    (m,) = json.loads(capsys.readouterr().out)["measurements"]
    assert (m["runtime"], m["device"]) == ("tvm", "cpu")
    assert main(["measure", str(SMALL_CNN), "--target", str(tvm_host), "--runtime", "onnxruntime", "--json",
                 "--repeats", "2"]) == 0
    assert [m["runtime"] for m in json.loads(capsys.readouterr().out)["measurements"]] == ["onnxruntime"]


def test_tvm_refuses_a_target_that_names_no_tvm_target() -> None:
    from hwnas.backends.measure.tvm import measure_tvm
    from hwnas.backends.target import load_target

    with pytest.raises(MeasureError) as e:
        measure_tvm(SMALL_CNN, target=load_target("cortex-a76"))
    assert_one_line(e.value, "target 'cortex-a76' names no TVM target", "[compile] tvm_target")


@pytest.mark.parametrize("case", ["missing", "corrupt", "repeats-0", "unknown-target", "unsupported-op",
                                  "no-tvm-target"])
def test_cli_bad_input_gives_one_line_and_exit_2(case: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model, extra, expect = str(SMALL_CNN), [], ""
    if case == "no-tvm-target":
        no_tvm = _host_cpu_copy(tmp_path, "tvm_target = '{\"kind\": \"llvm\", \"mcpu\": \"native\"}'",
                                'tvm_target = ""')
        extra, expect = ["--target", str(no_tvm), "--runtime", "both"], "names no TVM target"
    elif case == "missing":
        model, expect = str(tmp_path / "nope.onnx"), "nope.onnx: no such file"
    elif case == "corrupt":
        (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
        model, expect = str(tmp_path / "bad.onnx"), "bad.onnx"
    elif case == "repeats-0":
        extra, expect = ["--repeats", "0"], "--repeats must be at least 1"
    elif case == "unknown-target":
        extra, expect = ["--target", "tpu-v9"], "unknown target 'tpu-v9'"
    else:
        g = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="acme")], "custom",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)]),
                  tmp_path / "custom.onnx")
        model, expect = str(tmp_path / "custom.onnx"), "custom.onnx: onnxruntime cannot load the model"
    assert main(["measure", model, *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwnas: error: ") and expect in lines[0], captured.err
    assert captured.out == ""
