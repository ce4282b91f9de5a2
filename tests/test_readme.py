"""The README's custom-pass example runs exactly as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from hwnas.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(tag: str = "custom-pass") -> str:
    text = README.read_text()
    m = re.search(rf"<!-- {tag} -->\n```python\n(.*?)```\n<!-- /{tag} -->", text, re.S)
    assert m, f"README has no {tag} example"
    return m.group(1)


def test_example_is_about_twenty_lines() -> None:
    code = [ln for ln in _example().splitlines() if ln.strip()]
    assert len(code) <= 32


def test_readme_custom_pass_runs(tmp_path: Path) -> None:
    plugin = tmp_path / "my_passes.py"
    plugin.write_text(_example())
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], rng.standard_normal(16).astype(np.float32))
    one = helper.make_tensor("one", TensorProto.FLOAT, [4], np.ones(4, np.float32))
    two = helper.make_tensor("two", TensorProto.FLOAT, [4], np.full(4, 2.0, np.float32))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Mul", ["h", "one"], ["h1"], name="times_one"),
        helper.make_node("Mul", ["h1", "two"], ["y"], name="times_two"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, one, two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)

    assert main([ "opt", str(src), "-p", "drop-mul-by-one,dce", "--plugin", str(plugin), "-o", str(out)]) == 0

    result = onnx.load(out)
    assert [n.name for n in result.graph.node] == ["mm", "times_two"]
    x = rng.standard_normal((2, 4)).astype(np.float32)
    before = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    after = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)


def test_readme_pass_tests_run_and_pass(tmp_path: Path) -> None:
    # The README's three tests of the plugin (golden, numeric, negative) with the public helpers.
    (tmp_path / "my_passes.py").write_text(_example())
    (tmp_path / "test_my_passes.py").write_text(_example("custom-pass-test"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                             "--rootdir", str(tmp_path), "-c", "/dev/null", "test_my_passes.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout
