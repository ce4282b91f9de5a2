"""bind-dims: symbolic input dims become numbers, and the types after them follow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.backends.cost import estimate
from hwnas.cli import main
from hwnas.errors import CostError, PipelineError
from hwnas.frontends.onnx import import_onnx
from hwnas.passes import parse_pipeline
from hwnas.passes.bind_dims import BindDims
from hwnas.passes.testing import build_model, fires, node_lines, numeric, randn, unchanged

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "small_cnn.onnx"


def dynamic_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return build_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        {"x": (TensorProto.FLOAT, ["N", 3, 8, 8])}, ["y"], {"w": randn(rng, 4, 3, 3, 3)})


def test_golden() -> None:
    result = fires(dynamic_model(), BindDims(value=2))
    assert result.graph.inputs[0].type.shape == (2, 3, 8, 8)
    assert node_lines(result.graph) == (
        "  %c: f32[2,4,8,8] = Conv(%x, %w) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]} @Conv_0\n"
        "  %y: f32[2,4,8,8] = Relu(%c) @Relu_1\n")


def test_numeric() -> None:
    numeric(dynamic_model(), BindDims())


def test_negative_static_inputs_stay() -> None:
    unchanged(onnx.load(EXAMPLE), BindDims())


def test_bad_value() -> None:
    with pytest.raises(PipelineError, match="value must be at least 1"):
        parse_pipeline("bind-dims{value=0}")


def test_costs_need_numbers() -> None:
    graph = import_onnx(dynamic_model())
    with pytest.raises(CostError, match="input x has symbolic dims; bind them first"):
        estimate(graph, "host-cpu")
    r = estimate(BindDims().run(graph).graph, "host-cpu")
    assert r.node(graph.nodes[0].name).macs == 8 * 8 * 4 * 27


def test_cost_cli_binds_symbolic_dims_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "dynamic.onnx"
    onnx.save(dynamic_model(), path)
    assert main(["cost", str(path), "--target", "cortex-m7", "--json"]) == 0
    captured = capsys.readouterr()
    assert "symbolic dims bound to 1: x[N, 3, 8, 8]" in captured.err
    doc = json.loads(captured.out)
    conv = doc["targets"]["cortex-m7"]["nodes"][0]
    assert conv["macs"] == 8 * 8 * 4 * 27 and conv["latency_s"] > 0
