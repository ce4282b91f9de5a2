"""`hwnas compile`: artifact + cost report beside it, summary, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hwnas.cli import main

EXAMPLE = Path(__file__).parent.parent / "examples" / "small_cnn.onnx"


def _run(path: Path) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _calib(folder: Path, samples: int = 16) -> Path:
    """Sample inputs for the example (random normal: its weights are random too)."""
    folder.mkdir(exist_ok=True)
    path = folder / "calib.npz"
    np.savez(path, image=np.random.default_rng(1).standard_normal((samples, 3, 32, 32)).astype(np.float32))
    return path


def test_compile_writes_the_artifact_and_its_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    calib = _calib(tmp_path / "data")
    out = tmp_path / "out" / "small.onnx"
    out.parent.mkdir()
    assert main(["compile", str(EXAMPLE), "--target", "cortex-m7", "-o", str(out), "--calib-data", str(calib)]) == 0
    printed = capsys.readouterr().out
    assert "cortex-m7 (mcu, qdq-onnx, onnxruntime)" in printed and "SRAM:" in printed and "fits the target" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.cost.html", "small.cost.json", "small.onnx"]
    np.testing.assert_allclose(_run(out), _run(EXAMPLE), atol=0.1)  # int8: the target's pipeline quantizes
    doc = json.loads((out.parent / "small.cost.json").read_text())
    assert doc["target"] == "cortex-m7" and doc["fits"] and doc["target_precision"] == "int8"
    assert doc["pipeline"] == f'canonicalize,quantize{{calib="{calib}"}}'  # the whole pipeline, replayable
    assert {"latency_s", "energy_j", "peak_memory_bytes"} <= set(doc)
    assert (out.parent / "small.cost.html").read_text().startswith("<!DOCTYPE html>")


def test_a_model_that_does_not_fit_says_why(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             light_model_paths: dict[str, str]) -> None:
    out = tmp_path / "squeezenet.onnx"
    code = main(["compile", light_model_paths["squeezenet"], "-t", "cortex-m7", "--passes", "canonicalize", "-o",
                 str(out), "--strict"])
    printed = capsys.readouterr().out
    assert code == 1 and "DOES NOT FIT: SRAM: needs" in printed and "flash: needs" in printed
    assert out.exists()  # the artifact is still written: the report says what to change


@pytest.mark.parametrize(("argv", "message"), [
    (["-t", "no-such-board"], "unknown target 'no-such-board'"),
    (["-t", "cortex-m7", "--runtime", "tvm"], "builds for h100, host-cpu, jetson-orin only, not 'cortex-m7'"),
    (["-t", "host-cpu", "--passes", "no-such-pass"], "no-such-pass"),
])
def test_bad_input_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                  message: str) -> None:
    assert main(["compile", str(EXAMPLE), "-o", str(tmp_path / "m.onnx"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("hwnas: error:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compile", str(EXAMPLE), "-t", "host-cpu", "-o", str(tmp_path / "no" / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compile_to_a_tvm_library_for_host_cpu(tmp_path: Path) -> None:
    import tvm
    from tvm import relax

    out = tmp_path / "small.so"
    assert main(["compile", str(EXAMPLE), "-t", "host-cpu", "--runtime", "tvm", "-o", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.cost.html", "small.cost.json", "small.so"]
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out)), tvm.cpu())
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), _run(EXAMPLE), atol=1e-4)
    assert json.loads((tmp_path / "small.cost.json").read_text())["runtime"] == "tvm"


def test_a_quantized_compile_writes_qdq_and_is_priced_at_its_width(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   ) -> None:
    import onnx

    calib = tmp_path / "calib.npz"
    np.savez(calib, image=np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "q.onnx"
    assert main(["compile", str(EXAMPLE), "-t", "cortex-m7", "--passes", "canonicalize,quantize",
                 "--calib-data", str(calib), "-o", str(out)]) == 0
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    doc = json.loads((tmp_path / "q.cost.json").read_text())
    assert {n["precision"] for n in doc["nodes"] if n["op"] in ("Conv", "Gemm")} == {"int8"}
    np.testing.assert_allclose(_run(out), _run(EXAMPLE), atol=0.1)


def test_a_width_the_target_cannot_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "q.onnx"
    code = main(["compile", str(EXAMPLE), "-t", "host-cpu", "--passes", "quantize{w_bits=16,a_bits=16}",
                 "--allow-random-calib", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "target 'host-cpu' cannot run 16-bit integers" in err[-1]
    assert not any(tmp_path.glob("q.*"))


def _batch_dynamic(tmp_path: Path) -> Path:
    """The example with its batch dimension made symbolic ('N')."""
    import onnx

    m = onnx.load(EXAMPLE)
    for v in (*m.graph.input, *m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "dynamic.onnx"
    onnx.save(m, path)
    return path


def test_a_batch_dynamic_model_stays_batch_dynamic(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Pricing binds N to 1 on a copy; the artifact must still run any batch.
    src = _batch_dynamic(tmp_path)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    assert main(["compile", str(src), "-t", "cortex-m7", "--passes", "canonicalize", "-o", str(out)]) == 0
    assert "symbolic dims bound to 1" in capsys.readouterr().err
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(EXAMPLE), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.shape == (2, 10)
    for i in range(2):
        np.testing.assert_allclose(got[i:i + 1], ref.run(None, {ref.get_inputs()[0].name: x[i:i + 1]})[0], atol=1e-5)
    doc = json.loads((tmp_path / "out" / "m.cost.json").read_text())
    assert any("bound to 1" in n for n in doc["notes"]) and doc["fits"]


def test_compile_is_a_library_call_that_leaves_the_graph_alone() -> None:
    import hwnas
    from hwnas.frontends.onnx import import_onnx
    from hwnas.ir.text import print_graph

    graph = import_onnx(str(EXAMPLE))
    before = print_graph(graph)
    result = hwnas.compile(graph, "cortex-m7", pipeline="fold-batchnorm,fixpoint(eliminate-noops,dce),fuse-activations")
    assert print_graph(graph) == before  # the pipeline ran on a copy
    assert result.pipeline == "fold-batchnorm,fixpoint(eliminate-noops,dce),fuse-activations"
    assert result.runtime == "onnxruntime" and result.report.target == "cortex-m7"
    assert any("runs int8 kernels, but pipeline" in n for n in result.notes)  # a float pipeline for an int8 target
    sess = ort.InferenceSession(result.artifact, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], _run(EXAMPLE), atol=1e-5)


def test_the_whole_pipeline_is_recorded_with_its_calibration_data(tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, image=np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "q.onnx"
    assert main(["compile", str(EXAMPLE), "-t", "cortex-m7", "--passes", "canonicalize,quantize{method=mse}",
                 "--calib-data", str(calib), "-o", str(out)]) == 0
    spec = json.loads((tmp_path / "q.cost.json").read_text())["pipeline"]
    assert spec.startswith("canonicalize,quantize{") and "method=mse" in spec and str(calib) in spec
    from hwnas.passes import parse_pipeline

    assert parse_pipeline(spec).spec() == spec  # it replays


def test_figures_from_another_cpu_are_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A target file measured on another CPU: the summary, a one-line warning and the report say so.
    from hwnas.backends.measure import cpu_model
    from hwnas.backends.target import TARGETS_DIR

    text = (TARGETS_DIR / "epyc-zen5.toml").read_text()
    lines = [f'machine = "Some Other CPU {cpu_model()}x"' if ln.startswith("machine =") else ln
             for ln in text.splitlines()]
    board = tmp_path / "other.toml"
    board.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.onnx"
    assert main(["compile", str(EXAMPLE), "-t", str(board), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"figures measured on Some Other CPU {cpu_model()}x" in captured.out
    warning = [ln for ln in captured.err.splitlines() if "not on this machine" in ln]
    assert len(warning) == 1 and warning[0].startswith("hwnas: warning: the figures were measured on Some Other CPU")
    doc = json.loads((tmp_path / "m.cost.json").read_text())
    assert doc["machine"] == f"Some Other CPU {cpu_model()}x" and "not on this machine" in doc["machine_warning"]
    # The same file measured here says nothing of the kind.
    board.write_text(text.replace(next(ln for ln in text.splitlines() if ln.startswith("machine =")),
                                  f'machine = "{cpu_model()}"'))
    assert main(["compile", str(EXAMPLE), "-t", str(board), "-o", str(out)]) == 0
    assert "not on this machine" not in capsys.readouterr().err
    assert json.loads((tmp_path / "m.cost.json").read_text())["machine_warning"] is None


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-a76"])
def test_an_int8_target_refuses_a_float_model_without_calibration_data(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                      target: str) -> None:
    assert main(["compile", str(EXAMPLE), "-t", target, "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hwnas: error: target '{target}': pipeline 'canonicalize,quantize") and err.count("\n") == 1
    assert "no calibration data was given" in err and "--calib-data" in err and "--allow-random-calib" in err
    assert list(tmp_path.iterdir()) == []


def test_random_calibration_when_allowed_warns_and_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.onnx"
    assert main(["compile", str(EXAMPLE), "-t", "cortex-m7", "--allow-random-calib", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "hwnas: warning: quantize: no calibration data" in err and "calibrated on random inputs" in err
    doc = json.loads((tmp_path / "m.cost.json").read_text())
    assert doc["pipeline"] == "canonicalize,quantize" and doc["artifact"]["format"] == "qdq-onnx"
    assert any("calibrated on random inputs" in n for n in doc["notes"])


def test_the_report_prices_the_artifact_that_was_written(tmp_path: Path) -> None:
    import hashlib

    import onnx

    calib = _calib(tmp_path / "data", samples=8)
    out, float_out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    assert main(["compile", str(EXAMPLE), "-t", "cortex-m7", "--calib-data", str(calib), "-o", str(out)]) == 0
    doc = json.loads((tmp_path / "m.cost.json").read_text())
    data = out.read_bytes()
    assert doc["artifact"] == {"format": "qdq-onnx", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                               "precisions": {"int8": 4, "fp32": 1}}  # 3 Conv + Gemm; the pool of a float HardSwish
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(out).graph.node}
    assert {n["precision"] for n in doc["nodes"] if n["op"] in ("Conv", "Gemm")} == {"int8"}
    # The largest live set: the last conv's 32x32x32 output on its uint8 grid, and the HardSwish
    # after it, which the QDQ model runs in float between a DequantizeLinear and the next Q.
    assert doc["extra"]["sram_activations_bytes"] == 32 * 32 * 32 + 4 * 32 * 32 * 32
    assert main(["compile", str(EXAMPLE), "-t", "cortex-m7", "--passes", "canonicalize", "-o", str(float_out)]) == 0
    float_doc = json.loads((tmp_path / "f.cost.json").read_text())
    # In float the HardSwish overwrites the conv's output in place: the conv's input and output are the most.
    assert float_doc["artifact"]["format"] == "onnx"
    assert float_doc["extra"]["sram_activations_bytes"] == 4 * (16 + 32) * 32 * 32
    assert float_doc["latency_s"] > 2 * doc["latency_s"]  # fp32 kernels at a third of the int8 rates


def test_a_gpu_target_names_the_runtime_its_figures_assume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hwnas.backends.target import TARGETS_DIR

    out = tmp_path / "m.onnx"
    assert main(["compile", str(EXAMPLE), "-t", "h100", "-o", str(out)]) == 0
    assert "h100 (gpu, onnx, onnxruntime, figures assume CUDAExecutionProvider)" in capsys.readouterr().out
    doc = json.loads((tmp_path / "m.cost.json").read_text())
    assert doc["execution_provider"] == "CUDAExecutionProvider" and doc["pipeline"] == "canonicalize"
    board = tmp_path / "gpu.toml"
    board.write_text("\n".join(ln for ln in (TARGETS_DIR / "h100.toml").read_text().splitlines()
                               if not ln.startswith("execution_provider")))
    assert main(["compile", str(EXAMPLE), "-t", str(board), "-o", str(tmp_path / "g.onnx")]) == 2
    assert "field 'roofline.execution_provider' is missing" in capsys.readouterr().err
    assert not any(tmp_path.glob("g.*"))


def test_the_library_call_refuses_random_calibration_unless_allowed(tmp_path: Path) -> None:
    import hwnas
    from hwnas.errors import DataError
    from hwnas.frontends.onnx import import_onnx

    graph = import_onnx(str(EXAMPLE))
    with pytest.raises(DataError, match="no calibration data was given"):
        hwnas.compile(graph, "cortex-a76")
    result = hwnas.compile(graph, "cortex-a76", calib=str(_calib(tmp_path, samples=8)))
    assert result.artifact_format == "qdq-onnx" and result.report_json()["target_precision"] == "int8"
    assert {c.precision for c in result.report.nodes if c.op in ("Conv", "Gemm")} == {"int8"}


def test_random_calibration_takes_the_dims_given_and_the_artifact_stays_symbolic(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # 3x3 convs without padding cannot run on the 1x1 image that symbolic dims as 1 give.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal((4, c, 3, 3)).astype(np.float32), f"w{c}") for c in (3, 4)]
    g = helper.make_graph([helper.make_node("Conv", ["x", "w3"], ["c"], kernel_shape=[3, 3]),
                           helper.make_node("Relu", ["c"], ["r"]),
                           helper.make_node("Conv", ["r", "w4"], ["y"], kernel_shape=[3, 3])], "spatial",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=w)
    src = tmp_path / "spatial.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), src)
    out = tmp_path / "m.onnx"
    argv = ["compile", str(src), "-t", "cortex-m7", "--allow-random-calib", "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "symbolic dims as 1: x[H], x[W]" in err and "--dims NAME=SIZE" in err and not out.exists()
    assert main([*argv, "--dims", "H=8,W=8"]) == 0
    assert "symbolic dims as 1" not in capsys.readouterr().err
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, "H", "W"]
    for side in (8, 12):
        x = rng.standard_normal((1, 3, side, side)).astype(np.float32)
        assert sess.run(None, {"x": x})[0].shape == (1, 4, side - 4, side - 4)
