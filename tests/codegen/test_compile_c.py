"""`hwnas compile MODEL --target cortex-m7 -o OUT/`: the C project, through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from hwnas.cli import main
from hwnas.frontends.torch import export_onnx
from hwnas.passes.testing import build_model, randn


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(4 * 4 * 4, 3)).eval()
    onnx.save(export_onnx(module, torch.zeros(1, 1, 8, 8)), tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(32, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x)
    return tmp_path / "m.onnx", tmp_path / "calib.npz"


def test_compile_to_a_folder_writes_the_c_project(model: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, calib = model
    rc = main(["compile", str(onnx_path), "--target", "cortex-m7", "-o", f"{tmp_path / 'out'}/",
               "--calib-data", str(calib)])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hwnas_kernels.c", "hwnas_kernels.h",
                                                                   "model.c", "model.h"]
    report = json.loads((tmp_path / "out.cost.json").read_text())
    code = report["c_project"]
    assert report["artifact"]["format"] == "c99-project"
    assert code["arena_bytes"] == code["peak_bytes"] == report["extra"]["sram_activations_bytes"]
    assert f"arena {code['arena_bytes']:,} B" in capsys.readouterr().out
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-c", "model.c", "hwnas_kernels.c"],
                   cwd=tmp_path / "out", check=True)


def test_a_folder_for_a_target_that_is_no_mcu_is_refused(model: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, calib = model
    rc = main(["compile", str(onnx_path), "--target", "cortex-a76", "-o", f"{tmp_path / 'out'}/",
               "--calib-data", str(calib)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "C project" in err and "MCU targets" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.cost.json").exists()


def test_an_arena_beyond_the_sram_is_refused_unless_forced(model: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, calib = model
    small = tmp_path / "tiny-m7.toml"
    text = (Path(__file__).parents[2] / "hwnas" / "backends" / "targets" / "cortex-m7.toml").read_text()
    small.write_text(text.replace("sram_bytes = 524288", "sram_bytes = 100").replace('name = "cortex-m7"',
                                                                                       'name = "tiny-m7"'))
    args = ["compile", str(onnx_path), "--target", str(small), "-o", f"{tmp_path / 'out'}/", "--calib-data",
            str(calib)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "exceeds" in err and "SRAM of 100 B" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.cost.json").exists()
    assert main([*args, "--force"]) == 0
    assert (tmp_path / "out" / "model.c").exists()


def test_requantize_onnxruntime_gives_onnxruntimes_outputs(model: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--requantize onnxruntime` writes a project that rounds as onnxruntime's kernels: built by gcc on
    this machine, its int8 outputs equal onnxruntime's run of the compiled QDQ graph; without a folder
    to write a project to, the option is refused."""
    from hwnas.codegen.c.harness import HostModel, build_host_library
    from hwnas.compile import compile
    from hwnas.frontends import load_graph
    from hwnas.tasks.evaluate import run_model

    onnx_path, calib = model
    base = ["compile", str(onnx_path), "--target", "cortex-m7", "--calib-data", str(calib)]
    assert main([*base, "-o", f"{tmp_path / 'exact'}/", "--requantize", "onnxruntime"]) == 0
    assert main([*base, "-o", f"{tmp_path / 'fixed'}/"]) == 0
    exact, fixed = ((tmp_path / d / "model.c").read_text() for d in ("exact", "fixed"))
    assert "mult_" in fixed and "mult_" not in exact
    assert main([*base, "-o", str(tmp_path / "out.onnx"), "--requantize", "onnxruntime"]) == 2
    assert "give OUT as a folder" in capsys.readouterr().err and not list(tmp_path.glob("out.*"))
    compiled = compile(load_graph(onnx_path), "cortex-m7", calib=str(calib), c_project=True, requantize="onnxruntime")
    project = compiled.c_project
    assert project is not None
    x = np.random.default_rng(1).normal(size=(8, 1, 8, 8)).astype(np.float32)
    out = HostModel(build_host_library(project, tmp_path / "lib"), project).run(project.input.quantize(x))
    np.testing.assert_array_equal(out, project.output.quantize(run_model(compiled.graph, x)))


def test_dims_size_a_spatially_symbolic_model_for_the_c_project(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    m = build_model([helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                     helper.make_node("Relu", ["c"], ["r"]),
                     helper.make_node("Conv", ["r", "w2"], ["y"], kernel_shape=[1, 1])],
                    {"x": (TensorProto.FLOAT, [1, 1, "H", "W"])}, ["y"],
                    {"w": randn(rng, 4, 1, 3, 3), "b": randn(rng, 4), "w2": randn(rng, 2, 4, 1, 1)})
    onnx.save(m, tmp_path / "fcn.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(16, 1, 6, 10)).astype(np.float32))
    assert main(["compile", str(tmp_path / "fcn.onnx"), "--target", "cortex-m7", "-o", f"{tmp_path / 'out'}/",
                 "--calib-data", str(tmp_path / "calib.npz"), "--dims", "H=6,W=10"]) == 0
    header = (tmp_path / "out" / "model.h").read_text()
    assert "MODEL_INPUT_SIZE 60 /* x [1, 1, 6, 10] */" in header
    assert "MODEL_OUTPUT_SIZE 120 /* y [1, 2, 6, 10] */" in header
    report = json.loads((tmp_path / "out.cost.json").read_text())
    assert [n["macs"] for n in report["nodes"] if n["op"] == "Conv"] == [6 * 10 * 4 * 9, 6 * 10 * 2 * 4]


def test_a_c_project_of_a_model_with_two_outputs_is_refused_before_the_pipeline_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = build_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1]),
                     helper.make_node("Relu", ["y"], ["z"])],
                    {"x": (TensorProto.FLOAT, [1, 2, 4, 4])}, ["y", "z"],
                    {"w": randn(np.random.default_rng(0), 2, 2, 1, 1)})
    onnx.save(m, tmp_path / "two.onnx")
    assert main(["compile", str(tmp_path / "two.onnx"), "--target", "cortex-m7", "-o", f"{tmp_path / 'out'}/",
                 "--allow-random-calib"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # One line, and no word from the quantize pass: the pipeline never ran.
    assert err == ["hwnas: error: graph 'g': the C backend takes one input and one output, not 1 and 2"]
    assert not (tmp_path / "out").exists()


def test_random_calibration_is_said_once_though_two_steps_use_it(model: tuple[Path, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The quantize pass and the C project's output grid both fall back on random inputs.
    assert main(["compile", str(model[0]), "--target", "cortex-m7", "-o", f"{tmp_path / 'out'}/",
                 "--allow-random-calib"]) == 0
    err = capsys.readouterr().err
    assert err.count("activation ranges come from 32 random normal inputs") == 1
