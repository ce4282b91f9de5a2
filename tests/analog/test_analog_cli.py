"""`hwnas analog eval`: the digits CNN as an ONNX file with real data, and every kind of bad input
(one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from hwnas.backends.emit import emit_onnx
from hwnas.cli import main
from hwnas.passes.testing import SEED, build_model, randn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from hwnas.tasks import load_task

    task = load_task("digits-cnn")
    folder = tmp_path_factory.mktemp("digits")
    model, data = folder / "digits.onnx", folder / "digits.npz"
    onnx.save(emit_onnx(task.graph), model)
    (x, y), (xt, yt) = task.train, task.test
    np.savez(data, x=x[:200], y=y[:200], x_test=xt[:150], y_test=yt[:150])
    return model, data


def test_eval_reports_each_time_and_writes_json(digits_files: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model, data = digits_files
    out = tmp_path / "drift.json"
    rc = main(["analog", "eval", str(model), "--data", str(data), "--times", "1,30d", "--repeats", "2",
               "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "map-analog: 6 of 6 weight layers on" in captured.err
    for row in ("float (digital)", "1 s", "30 d", "150 test samples, 2 programmings", "drift compensation on"):
        assert row in captured.out, row
    doc = json.loads(out.read_text())
    assert [t["t_s"] for t in doc["times"]] == [1.0, 2592000.0] and doc["samples"] == 150
    assert all(len(t["accuracies"]) == 2 for t in doc["times"])
    assert abs(doc["times"][0]["mean"] - doc["float_accuracy"]) <= 0.04
    assert len(doc["analog_layers"]) == 6 and doc["digital_layers"] == {}


def error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwnas: error: "), err
    return err[0]


def test_bad_input_is_one_line_and_writes_nothing(digits_files: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model, data = digits_files
    out = tmp_path / "drift.json"
    base = ["analog", "eval", str(model), "--data", str(data), "--repeats", "1", "--json", str(out)]
    assert "--times: 'abc' is not a time" in error(capsys, [*base, "--times", "1,abc"])
    assert "--times: '-5': times after programming must be positive" in error(capsys, [*base, "--times", "-5"])
    assert "--repeats must be at least 1" in error(capsys, [*base, "--repeats", "0"])
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((10, 1, 7, 7), np.float32), y=np.zeros(10, np.int64))
    line = error(capsys, ["analog", "eval", str(model), "--data", str(wrong), "--json", str(out)])
    assert "'x' has shape [10, 1, 7, 7]" in line
    line = error(capsys, [*base, "-p", "canonicalize,map-analog{tile_rows=2,tile_cols=2,tiles=1}"])
    assert "map-analog: no layer of graph" in line and "fits 1 tiles of 2x2" in line
    assert "is a cpu target" in error(capsys, [*base, "--target", "host-cpu"])
    assert "give either MODEL" in error(capsys, ["analog", "eval", "--task", "digits-cnn", str(model)])
    assert not out.exists() and not list(tmp_path.glob(".drift.json*"))


def test_layers_aihwkit_cannot_take_are_named_in_one_warning(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["b"], name="depthwise", group=4, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["b"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w3"], ["y"], name="fc", transB=1)]
    weights = {"w1": randn(rng, 4, 1, 3, 3), "w2": randn(rng, 4, 1, 3, 3), "w3": randn(rng, 3, 4)}
    model, data = tmp_path / "dw.onnx", tmp_path / "dw.npz"
    onnx.save(build_model(nodes, {"x": [1, 1, 6, 6]}, ["y"], weights), model)
    np.savez(data, x=rng.standard_normal((40, 1, 6, 6)).astype(np.float32), y=rng.integers(0, 3, 40))
    assert main(["analog", "eval", str(model), "--data", str(data), "--times", "1", "--repeats", "1"]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if "aihwkit simulation leaves" in ln]
    assert warnings == ["hwnas: warning: the aihwkit simulation leaves 1 placed layer(s) digital: 'depthwise' (Conv): "
                        "aihwkit 1.2 has no grouped convolution (group=4)"]
