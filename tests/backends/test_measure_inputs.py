"""`hwnas measure --inputs FILE.npz`: the model is timed on the user's arrays (their shapes set
the symbolic dims), and without them a model with an op whose time depends on the values
(PRelu on a CPU) gets a line saying it was timed on random inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.cli import main

RUNS = ["--repeats", "3", "--warmup", "1", "--json"]


def gather_model(path: Path) -> Path:
    """y = table[idx] for a table of 2 rows: random integer inputs (0-3) index out of range,
    so only the user's indices let onnxruntime run it."""
    table = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4), "table")
    g = helper.make_graph([helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)], "gather",
                          [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[table])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def prelu_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    slope = numpy_helper.from_array(np.full((8, 1, 1), 0.1, np.float32), "slope")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("PRelu", ["c", "slope"], ["y"])], "prelu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])],
                          initializer=[w, slope])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_users_arrays_are_what_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = gather_model(tmp_path / "gather.onnx")
    # Random inputs (integers 0-3) index past the table's 2 rows: onnxruntime refuses.
    assert main(["measure", str(model), "--dims", "N=64", *RUNS]) == 2
    assert "onnxruntime cannot run the model" in _error(capsys)
    np.savez(tmp_path / "idx.npz", idx=np.array([0, 1, 1, 0, 1], np.int32))  # int32: converted to int64
    assert main(["measure", str(model), "--inputs", str(tmp_path / "idx.npz"), *RUNS]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["measurements"][0]["repeats"] == 3


def test_random_inputs_are_said_where_the_values_matter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = prelu_model(tmp_path / "prelu.onnx")
    assert main(["measure", str(model), *RUNS]) == 0
    err = capsys.readouterr().err
    assert "timed on random inputs; PRelu ×1: time depends on the input's values" in err
    assert "--inputs FILE.npz" in err
    x = np.abs(np.random.default_rng(1).standard_normal((2, 3, 16, 16))).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["measure", str(model), "--inputs", str(tmp_path / "x.npz"), *RUNS]) == 0
    assert "random inputs" not in capsys.readouterr().err


@pytest.mark.parametrize(("arrays", "message"), [
    ({"image": np.zeros((1, 3, 16, 16), np.float32)}, "no array for input 'x'"),
    ({"x": np.zeros((1, 3, 16, 16), np.float32), "extra": np.zeros(2)}, "array 'extra' is no input"),
    ({"x": np.zeros((1, 3, 8, 8), np.float32)}, "array 'x' has shape [1, 3, 8, 8], the input is [?, 3, 16, 16]"),
    ({"x": np.zeros((1, 3, 16, 16), np.int64)}, "array 'x' is int64, the input is float32"),
])
def test_wrong_arrays_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], arrays: dict[str, np.ndarray],
                                   message: str) -> None:
    model = prelu_model(tmp_path / "prelu.onnx")
    np.savez(tmp_path / "in.npz", **arrays)
    assert main(["measure", str(model), "--inputs", str(tmp_path / "in.npz"), *RUNS]) == 2
    line = _error(capsys)
    assert line.startswith("hwnas: error: ") and message in line and "in.npz" in line, line


def test_an_unreadable_file_and_a_clash_with_dims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = prelu_model(tmp_path / "prelu.onnx")
    assert main(["measure", str(model), "--inputs", str(tmp_path / "none.npz"), *RUNS]) == 2
    assert "none.npz': no such file" in _error(capsys)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert main(["measure", str(model), "--inputs", str(tmp_path / "bad.npz"), *RUNS]) == 2
    assert "cannot read as .npz" in _error(capsys)
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 3, 16, 16), np.float32))
    assert main(["measure", str(model), "--inputs", str(tmp_path / "x.npz"), "--dims", "x=1x3x16x16", *RUNS]) == 2
    assert "--dims x and the array of that name" in _error(capsys)
