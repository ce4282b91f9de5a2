"""`hwnas compile MODEL --target cortex-m7 -o OUT/`: the C project, through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwnas.cli import main
from hwnas.frontends.torch import export_onnx


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
