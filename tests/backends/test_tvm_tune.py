"""TVM tuned with MetaSchedule: a real tuning run (real builds, a real runner process, a handful of
trials) on a tiny Conv+Relu+Gemm model whose outputs must equal onnxruntime's, tuning records that
reach the compiled library, nothing left in the temporary folder, nothing on stdout; and the
untuned warning of `hwnas measure`/`hwnas compile`."""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.backends.measure import random_inputs
from hwnas.backends.measure.onnxruntime import run_onnxruntime
from hwnas.cli import main
from hwnas.errors import MeasureError

UNTUNED = "warning: TVM kernels are untuned"


def conv_gemm(seed: int = 0) -> onnx.ModelProto:
    """Conv(+bias) -> Relu -> Flatten -> Gemm: three tuning tasks (fused conv, reshape, dense)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B"),
             numpy_helper.from_array(rng.standard_normal((10, 8 * 8 * 8)).astype(np.float32) * 0.05, "W2"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "B2")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "B2"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "conv_gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


@pytest.mark.slow  # ~10 s on a quiet 2-core machine, 25-30 s on a loaded one: TVM's runner process, builds
def test_measure_tuned_json_and_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(conv_gemm(), path)
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # every temporary folder of the run lands here
    stack = inspect.stack
    assert main(["measure", str(path), "--runtime", "tvm", "--tune-trials", "4", "--repeats", "3", "--json"]) == 0
    got = capfd.readouterr()
    (m,) = json.loads(got.out)["measurements"]  # MetaSchedule's round-by-round log did not reach stdout
    tuning = m["tuning"]
    assert tuning["budget"] == 4 and tuning["tasks"] == tuning["kernels"] == 3  # conv2d+add+relu, flatten, dense
    assert 1 <= tuning["tuned_kernels"] <= 3 and 1 <= tuning["trials"] <= 4 + 3 and tuning["seconds"] > 0
    assert _lines(got.err, UNTUNED) == []
    (note,) = _lines(got.err, "TVM tuned with MetaSchedule")
    assert f"{tuning['trials']} trials of 4 budgeted" in note
    assert inspect.stack is stack  # the fast replacement is gone after tuning
    assert list(work.iterdir()) == []  # MetaSchedule's work directory and candidates removed


def test_fast_stack_matches_inspect_stack() -> None:
    from hwnas.backends.measure.tvm_tune import _fast_stack

    def inner() -> tuple[list[inspect.FrameInfo], list[inspect.FrameInfo]]:
        return _fast_stack(), inspect.stack()

    fast, slow = inner()
    assert [(f.filename, f.function) for f in fast] == [(f.filename, f.function) for f in slow]
    assert fast[0].lineno == slow[0].lineno  # the caller's line, not _fast_stack's
    assert fast[0].code_context == slow[0].code_context and fast[0].index == 0


def test_cli_warns_once_when_untuned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(conv_gemm(), path)
    assert main(["measure", str(path), "--runtime", "both", "--repeats", "2", "--warmup", "0", "--json"]) == 0
    got = capsys.readouterr()
    assert len(json.loads(got.out)["measurements"]) == 2
    (line,) = _lines(got.err, UNTUNED)
    assert line.startswith("hwnas: ") and "--tune-trials N" in line
    assert "tuning" not in json.loads(got.out)["measurements"][1]

    assert main(["measure", str(path), "--runtime", "onnxruntime", "--repeats", "2"]) == 0
    assert _lines(capsys.readouterr().err, UNTUNED) == []

    assert main(["measure", str(path), "--runtime", "onnxruntime", "--repeats", "2", "--tune-trials", "8"]) == 0
    assert "--tune-trials unused" in capsys.readouterr().err

    out = tmp_path / "m.so"
    assert main(["compile", str(path), "-t", "host-cpu", "--runtime", "tvm", "--passes", "", "-o", str(out)]) == 0
    assert len(_lines(capsys.readouterr().err, UNTUNED)) == 1 and out.stat().st_size > 0


@pytest.mark.parametrize("cmd", ["measure", "compile"])
def test_cli_refuses_a_negative_budget(cmd: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(conv_gemm(), path)
    args = [cmd, str(path), "--runtime", "tvm", "--tune-trials", "-1"]
    args += ["-t", "host-cpu", "-o", str(tmp_path / "m.so")] if cmd == "compile" else []
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--tune-trials must be 0 (untuned) or more (got -1)" in err and "\n" not in err
    assert not (tmp_path / "m.so").exists()


def test_tuning_refuses_a_negative_budget_in_the_library() -> None:
    from hwnas.backends.measure.tvm import compile_tvm

    with pytest.raises(MeasureError, match="got -3"):
        compile_tvm(conv_gemm(), tune_trials=-3)


@pytest.mark.slow  # a second tuning run (~10-30 s), through the CLI: the library loads, records are kept
def test_cli_compile_tuned_library_runs_and_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tvm

    path, out = tmp_path / "m.onnx", tmp_path / "m.so"
    model = conv_gemm(seed=2)
    onnx.save(model, path)
    records = tmp_path / "records"
    assert main(["compile", str(path), "-t", "host-cpu", "--runtime", "tvm", "--passes", "", "--tune-trials", "3",
                 "--tune-dir", str(records), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert _lines(err, UNTUNED) == []
    (note,) = _lines(err, "TVM tuned with MetaSchedule")
    assert "of 3 budgeted" in note
    assert note.removeprefix("hwnas: ") in json.loads((tmp_path / "m.cost.json").read_text())["notes"]
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(out)), tvm.cpu())
    feeds = random_inputs(model, seed=4)
    got = vm["main"](tvm.runtime.tensor(feeds["x"])).numpy()
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-4, atol=1e-4)

    # the records kept in --tune-dir are applied without tuning again (0 trials), and no warning
    assert main(["measure", str(path), "--runtime", "tvm", "--tune-dir", str(records), "--repeats", "2", "--json"]) == 0
    got_cli = capsys.readouterr()
    tuning = json.loads(got_cli.out)["measurements"][0]["tuning"]
    assert (tuning["budget"], tuning["trials"], tuning["tune_dir"]) == (0, 0, str(records))
    assert tuning["cached"] >= 3 and tuning["tuned_kernels"] >= 1 and _lines(got_cli.err, UNTUNED) == []
