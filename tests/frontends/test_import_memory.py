"""Importing a large model keeps one copy of its weights: shapes need no weight copies, and
neither does bringing an old opset up (onnx's converter copies a model several times)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

PEAK = """
import resource, sys
from hwnas.cli import main
main(["inspect", sys.argv[1]])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

BASELINE = """
import resource
import hwnas.cli.inspect_cmd, hwnas.frontends.onnx, hwnas.passes.bind_dims, hwnas.backends.cost.report
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def mlp_file(path: Path, opset: int, width: int = 512, layers: int = 48) -> int:
    """A ~50 MB MLP with random weights and a symbolic batch; returns the file's size."""
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(layers):
        weights.append(numpy_helper.from_array(rng.standard_normal((width, width), dtype=np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [f"r{i}"])]
        x = f"r{i}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], weights)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path.stat().st_size


def peak_kb(script: str, *args: str) -> int:
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    return int(r.stdout.rsplit("PEAK_KB", 1)[1])


@pytest.mark.parametrize("opset", [9, 17])  # 9: brought up to 17 by onnx's version converter
def test_inspect_peak_memory_stays_under_three_times_the_file(tmp_path: Path, opset: int) -> None:
    size = mlp_file(tmp_path / "mlp.onnx", opset)
    assert size > 45e6
    grown = (peak_kb(PEAK, str(tmp_path / "mlp.onnx")) - peak_kb(BASELINE)) * 1024
    assert grown < 3 * size, f"inspect grew by {grown / size:.2f}x the file's size"
