"""The README's custom-pass example runs exactly as printed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from hwnas.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- custom-pass -->\n```python\n(.*?)```\n<!-- /custom-pass -->", text, re.S)
    assert m, "README has no custom-pass example"
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
