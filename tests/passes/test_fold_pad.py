"""fold-pad: a constant zero Pad of H and W folded into the Conv that reads it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from hwnas.passes.fold_pad import RULES, FoldPad
from hwnas.passes.testing import SEED, build_model, fires, node_lines, numeric, randn, unchanged


def pad_conv(pads: list[int], value: float = 0.0, mode: str = "constant", conv_pads: list[int] | None = None,
             extra_reader: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["p"], name="pad", mode=mode),
             helper.make_node("Conv", ["p", "w"], ["y"], name="conv", pads=conv_pads or [0, 0, 0, 0])]
    outputs = ["y"]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["p"], ["r"], name="relu"))
        outputs.append("r")
    weights = {"pads": np.array(pads, np.int64), "value": np.array(value, np.float32), "w": randn(rng, 4, 3, 3, 3)}
    return build_model(nodes, {"x": [1, 3, 7, 7]}, outputs, weights)


def test_golden() -> None:
    result = fires(pad_conv([0, 0, 0, 1, 0, 0, 2, 1], conv_pads=[1, 0, 0, 0]), FoldPad())
    assert node_lines(result.graph) == (
        "  %y: f32[1,4,8,7] = Conv(%x, %w) {pads=[1, 1, 2, 1]} @conv\n")


@pytest.mark.parametrize("pads", [[0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 2, 0, 0, 3, 0]])
def test_numeric(pads: list[int]) -> None:
    numeric(pad_conv(pads, conv_pads=[1, 1, 1, 1]), FoldPad())


@pytest.mark.parametrize("model, reason", [
    (pad_conv([0, 0, 1, 1, 0, 0, 1, 1], value=1.0), "pads with a value other than 0"),
    (pad_conv([0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"), "mode is not constant"),
    (pad_conv([0, 1, 1, 1, 0, 0, 1, 1]), "pads the batch or channel axis, or crops"),
    (pad_conv([0, 0, -1, 1, 0, 0, 1, 1]), "pads the batch or channel axis, or crops"),
    (pad_conv([0, 0, 1, 1, 0, 0, 1, 1], extra_reader=True), "is not read by one Conv alone"),
])
def test_negative(model: onnx.ModelProto, reason: str) -> None:
    assert unchanged(model, FoldPad(), RULES) == {"pad": reason}
