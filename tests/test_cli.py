"""The `hwnas` command: each subcommand on real models, and every kind of bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hwnas.cli import main
from hwnas.ir.text import parse_graph

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_cnn.onnx"
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light"


def _outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def test_inspect_prints_layers_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(LIGHT / "light_resnet50.onnx")]) == 0
    out = capsys.readouterr().out
    assert "Conv" in out and "total" in out
    assert "MACs 4,089,184,256" in out
    assert "params 25,6" in out


def test_inspect_lists_unpriced_ops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = helper.make_node("Einsum", ["a", "b"], ["c"], equation="ij,jk->ik")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 2]) for n in "ab"],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "e.onnx")
    assert main(["inspect", str(tmp_path / "e.onnx")]) == 0
    assert "unpriced ops: Einsum ×1" in capsys.readouterr().out


def test_opt_with_every_instrument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, dumps = tmp_path / "o.onnx", tmp_path / "ir"
    rc = main(["opt", str(EXAMPLE), "-p", "canonicalize", "-o", str(out), "--print-ir-after", "fold-batchnorm",
               "--time-passes", "--dump-ir", str(dumps), "--verify"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "// IR after fold-batchnorm" in captured.out and "BatchNormalization" not in captured.out.split(
        "// IR after fold-batchnorm")[1]
    assert "fold-batchnorm" in captured.err and "seconds" in captured.err
    files = sorted(p.name for p in dumps.iterdir())
    assert files[0] == "000-input.txt" and files[1].startswith("001-") and len(files) > 5
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_outputs(out, x)[0], _outputs(EXAMPLE, x)[0], atol=1e-5)
    assert [n.op_type for n in onnx.load(out).graph.node].count("BatchNormalization") == 0


def test_print_ir_after_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", str(EXAMPLE), "-p", "dce,refresh-shapes", "-o", str(tmp_path / "o.onnx"),
                 "--print-ir-after", "all"]) == 0
    out = capsys.readouterr().out
    assert "// IR after dce" in out and "// IR after refresh-shapes" in out


def test_dump_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", str(EXAMPLE), "--format", "text", "--weights"]) == 0
    graph = parse_graph(capsys.readouterr().out)
    assert graph.inputs[0].name == "image"
    assert main(["dump", str(EXAMPLE), "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph")
    assert main(["dump", str(EXAMPLE), "--format", "json", "-o", str(tmp_path / "g.json")]) == 0
    assert (tmp_path / "g.json").is_file() and (tmp_path / "g.npz").is_file()
    # A JSON dump is itself a model the CLI reads.
    assert main(["opt", str(tmp_path / "g.json"), "-p", "canonicalize", "-o", str(tmp_path / "o.onnx")]) == 0


def test_passes_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["passes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [ln for ln in lines if ln and not ln.startswith(" ")]
    names = {ln.split("{")[0].split("(")[0] for ln in heads}
    assert {"canonicalize", "dce", "fold-batchnorm", "fold-constants", "eliminate-noops"} <= names
    # Options with types and defaults, and the whole first paragraph (not cut at its first period).
    assert "fold-constants{max_elements: int = 1024}" in heads
    assert "criterion: l1|l2|bn = l1" in next(h for h in heads if h.startswith("prune-channels{"))
    text = " ".join(ln.strip() for ln in lines)
    assert "Bypasses Identity, inference-mode Dropout" in text and "Transpose pairs whose permutations cancel" in text


def test_passes_shows_one_pass_and_refuses_an_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["passes", "dce"]) == 0
    assert capsys.readouterr().out.startswith("dce\n    Removes nodes")
    assert main(["passes", "no-such-pass"]) == 2
    assert "unknown pass 'no-such-pass'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["inspect", "opt", "dump", "passes"])
def test_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "hwnas.cli", command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: hwnas" in result.stdout


# -- bad input ---------------------------------------------------------------------------


def _model_file(tmp_path: Path, nodes: list[onnx.NodeProto], name: str) -> Path:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / name
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / "not.onnx"
    text.write_text("this is not a model\n")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(EXAMPLE.read_bytes()[: EXAMPLE.stat().st_size // 2])
    cycle = _model_file(tmp_path, [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                                   helper.make_node("Relu", ["a"], ["b"], name="second"),
                                   helper.make_node("Relu", ["a"], ["y"], name="third")], "cycle.onnx")
    undefined = _model_file(tmp_path, [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")], "undef.onnx")
    a_file = tmp_path / "file"
    a_file.write_text("")
    out = str(tmp_path / "out.onnx")
    return {
        "missing file": (["opt", str(tmp_path / "nope.onnx"), "-p", "dce", "-o", out], "no such file"),
        "a directory": (["inspect", str(tmp_path)], "is a directory"),
        "not onnx": (["opt", str(text), "-p", "dce", "-o", out], "not a valid ONNX model"),
        "truncated": (["opt", str(truncated), "-p", "dce", "-o", out], "not a valid ONNX model"),
        "cycle": (["opt", str(cycle), "-p", "dce", "-o", out], "cycle"),
        "undefined input": (["opt", str(undefined), "-p", "dce", "-o", out], "'adder' (Add) reads 'ghost'"),
        "unknown pass": (["opt", str(EXAMPLE), "-p", "canonicalize,frobnicate", "-o", out],
                         "unknown pass 'frobnicate'"),
        "unknown option": (["opt", str(EXAMPLE), "-p", "fold-constants{size=3}", "-o", out], "no option 'size'"),
        "wrong option type": (["opt", str(EXAMPLE), "-p", "fold-constants{max_elements=big}", "-o", out],
                              "option 'max_elements' must be int"),
        "missing plugin": (["opt", str(EXAMPLE), "-p", "dce", "--plugin", str(tmp_path / "p.py"), "-o", out],
                           "plugin file not found"),
        "unwritable output": (["opt", str(EXAMPLE), "-p", "dce", "-o", str(a_file / "o.onnx")], "cannot write"),
        "output is a directory": (["opt", str(EXAMPLE), "-p", "dce", "-o", str(tmp_path)], "is a directory"),
        "dump json without -o": (["dump", str(EXAMPLE), "--format", "json"], "give -o"),
    }


CASES = ["missing file", "a directory", "not onnx", "truncated", "cycle", "undefined input", "unknown pass",
         "unknown option", "wrong option type", "missing plugin", "unwritable output", "output is a directory",
         "dump json without -o"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, phrase = _bad_inputs(tmp_path)[case]
    before = set(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error:") and phrase in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert set(tmp_path.rglob("*")) == before  # nothing written, not even a temporary file


def test_bad_input_through_the_real_entry_point(tmp_path: Path) -> None:
    argv, _ = _bad_inputs(tmp_path)["truncated"]
    result = subprocess.run([sys.executable, "-m", "hwnas.cli", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out.onnx").exists()
