"""`hwnas inspect`'s figures: a symbolic batch is counted per sample, each weight once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwnas.cli import main


def test_symbolic_batch_is_counted_per_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("MatMul", ["h", "wt"], ["y"]),
             helper.make_node("Transpose", ["w"], ["wt"])]  # the weight read twice (tied), once transposed
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert main(["inspect", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "MACs per sample 64" in out  # 8*4 + 4*8, not 0
    assert "per sample: symbolic dims of x[N, 8] counted as 1" in out
    assert "params 32 (128 B)" in out
    assert "[N,8]" in out.replace(" ", "")  # the table keeps the model's own shapes
