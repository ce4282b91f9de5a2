"""The `hwnas` command: each subcommand on real models, and every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    node = helper.make_node("Det", ["a"], ["c"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 2, 2])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "e.onnx")
    assert main(["inspect", str(tmp_path / "e.onnx")]) == 0
    assert "unpriced ops: Det ×1" in capsys.readouterr().out


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
    string_kernel = _model_file(tmp_path, [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape="3")],
                                "string_kernel.onnx")
    extra_attr = _model_file(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="act", mode="fast")], "attr.onnx")
    no_such_op = _model_file(tmp_path, [helper.make_node("Frobnicate", ["x"], ["y"], name="frob")], "op.onnx")
    self_loop = _model_file(tmp_path, [helper.make_node("Add", ["x", "y"], ["y"], name="loop")], "loop.onnx")
    new_opset = helper.make_model(onnx.load(str(EXAMPLE)).graph, opset_imports=[helper.make_opsetid("", 999)])
    (tmp_path / "opset.onnx").write_bytes(new_opset.SerializeToString())
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
        "string kernel_shape": (["opt", str(string_kernel), "-p", "dce", "-o", out],
                                "node 'pool' (MaxPool): Mismatched attribute type"),
        "attribute the op lacks": (["inspect", str(extra_attr)], "node 'act' (Relu): Unrecognized attribute: mode"),
        "op onnx lacks": (["inspect", str(no_such_op)], "node 'frob' (Frobnicate): No Op registered for Frobnicate"),
        "node reads its own output": (["opt", str(self_loop), "-p", "dce", "-o", out], "cycle through loop"),
        "opset onnx lacks": (["inspect", str(tmp_path / "opset.onnx")], "opset 999 of domain 'ai.onnx'"),
        "untyped custom output": (["opt", str(_custom_output(tmp_path)), "-p", "dce", "-o", out],
                                  "graph output 'y' has no known type (computed by node 'mystery' (com.example::"),
        "print-ir-after unknown pass": (["opt", str(EXAMPLE), "-p", "dce", "--print-ir-after", "fold-batchnrom",
                                         "-o", out], "no pass named 'fold-batchnrom' (did you mean 'fold-batchnorm'?"),
        "measure huge input": (["measure", str(_huge_input(tmp_path))], "random inputs would take 120.0 GB"),
    }


def _custom_output(tmp_path: Path) -> Path:
    """A model whose output comes from an op of another domain: onnx cannot infer its type."""
    g = helper.make_graph([helper.make_node("Mystery", ["x"], ["y"], name="mystery", domain="com.example")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _huge_input(tmp_path: Path) -> Path:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100_000, 100_000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 100_000, 100_000])])
    path = tmp_path / "huge.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


CASES = ["missing file", "a directory", "not onnx", "truncated", "cycle", "undefined input", "unknown pass",
         "unknown option", "wrong option type", "missing plugin", "unwritable output", "output is a directory",
         "dump json without -o", "string kernel_shape", "attribute the op lacks", "op onnx lacks",
         "node reads its own output", "opset onnx lacks", "untyped custom output", "print-ir-after unknown pass",
         "measure huge input"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, phrase = _bad_inputs(tmp_path)[case]
    before = set(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error:") and phrase in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert set(tmp_path.rglob("*")) == before  # nothing written, not even a temporary file


def test_op_with_an_untyped_input_is_unpriced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A MatMul reading a custom op's output (no type onnx could infer) is listed as not counted
    (its sizes are unknown), the custom op as unpriced, instead of failing the whole table; the
    totals say they are lower bounds."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.ones(16, np.float32))
    g = helper.make_graph([helper.make_node("Mystery", ["x"], ["m"], name="mystery", domain="com.example"),
                           helper.make_node("MatMul", ["m", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[w])
    path = tmp_path / "untyped.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                         helper.make_opsetid("com.example", 1)]).SerializeToString())
    assert main(["inspect", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "unpriced ops: com.example::Mystery ×1" in printed, printed
    assert "sizes unknown" in printed and "MatMul ×1" in printed and "lower bounds" in printed, printed
    assert main(["cost", str(path), "-t", "host-cpu", "--json"]) == 0
    notes = {n["node"]: n["note"] for n in json.loads(capsys.readouterr().out)["targets"]["host-cpu"]["nodes"]}
    assert notes["mm"] == "its sizes are not known before run time" and notes["mystery"] == "no cost entry for this op"


def test_a_node_whose_sizes_onnx_could_not_infer_is_not_counted_as_zero(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A conv whose input's width comes from a computed Pad (onnx's inference names the dim
    instead of sizing it) was counted at 0 MACs in `inspect`; it is now not counted, and said
    so. `cost` folds the pads first and counts it."""
    import onnx

    g = helper.make_graph([
        helper.make_node("ConstantOfShape", ["two"], ["z"], value=helper.make_tensor("v", TensorProto.INT64, [1], [0])),
        helper.make_node("Concat", ["z", "one", "z", "one"], ["pads"], axis=0),  # [0, 0, 1, 0, 0, 1]
        helper.make_node("Pad", ["x", "pads"], ["xp"]),
        helper.make_node("Conv", ["xp", "w"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("two", TensorProto.INT64, [1], [2]),
                     helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                     helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 3], np.ones(6, np.float32))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    conv_out = next(v for v in inferred.graph.output if v.name == "y").type.tensor_type.shape.dim
    assert any(d.HasField("dim_param") for d in conv_out)  # the premise: onnx names a dim it could size
    path = tmp_path / "padded.onnx"
    onnx.save(model, path)
    assert main(["inspect", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "size unknown" in printed and "Conv ×1" in printed and "lower bounds" in printed, printed
    assert main(["cost", str(path), "-t", "host-cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["targets"]["host-cpu"]
    conv = next(n for n in report["nodes"] if n["node"] == "conv")
    assert conv["macs"] == 2 * 16 * 3 and conv["latency_s"] > 0 and not report["latency_is_lower_bound"]


RAISING_PLUGIN = """
from dataclasses import dataclass

from hwnas.passes import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class Explode(Pass):
    \"\"\"A pass with a bug.\"\"\"

    name = "test-cli-explode"

    def run(self, graph):
        return {}["missing"]
"""


def test_a_bug_is_one_internal_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An exception that is not a HwnasError (here from a plugin pass with a bug) is a bug, not the
    user's error: one line that says so and where, exit 1, no traceback, nothing written."""
    from hwnas.passes.base import PASSES

    plugin = tmp_path / "explode_plugin.py"
    plugin.write_text(RAISING_PLUGIN)
    out = tmp_path / "out.onnx"
    try:
        assert main(["opt", str(EXAMPLE), "-p", "test-cli-explode", "--plugin", str(plugin), "-o", str(out)]) == 1
    finally:
        PASSES.pop("test-cli-explode", None)
        sys.modules.pop("hwnas_plugin_explode_plugin", None)
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: internal error: KeyError: 'missing' (explode_plugin.py:15)"), err
    assert len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("argv", [["--help"], ["compile", "--bogus"], ["compress", "--bogus"], ["opt", "--help"],
                                  ["compile", "missing.onnx", "--target", "cortex-m7", "-o", "out.onnx"],
                                  ["inspect", "missing.onnx"],
                                  ["compile", "examples/small_cnn.onnx", "--target", "nope", "-o", "out.onnx"],
                                  ["search", "--target", "nope"]])
def test_parsing_is_fast_and_imports_no_numerical_library(argv: list[str]) -> None:
    """`hwnas --help`, a wrong flag, a missing model file and an unknown target answer before onnx,
    numpy, torch or onnxruntime load (the module check is the guard; the time has slack for slow
    CI machines)."""
    probe = ("import sys, time\n"
             "t = time.perf_counter()\n"
             "from hwnas.cli import main\n"
             "try:\n"
             f"    main({argv!r})\n"
             "except SystemExit:\n"
             "    pass\n"
             "heavy = [m for m in ('onnx', 'numpy', 'torch', 'onnxruntime', 'scipy', 'tvm') if m in sys.modules]\n"
             "print('HEAVY', heavy, time.perf_counter() - t, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    line = next(x for x in result.stderr.splitlines() if x.startswith("HEAVY"))
    assert "HEAVY []" in line, line
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hwnas.cli", *argv], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    said = done.stdout + done.stderr
    assert done.returncode == (0 if "--help" in argv else 2) and ("usage: hwnas" in said or (
        said.startswith("hwnas: error: ") and len(said.strip().splitlines()) == 1)), said
    assert seconds < 1.0, f"hwnas {' '.join(argv)} took {seconds:.2f} s"


def test_bad_input_through_the_real_entry_point(tmp_path: Path) -> None:
    argv, _ = _bad_inputs(tmp_path)["truncated"]
    result = subprocess.run([sys.executable, "-m", "hwnas.cli", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out.onnx").exists()
