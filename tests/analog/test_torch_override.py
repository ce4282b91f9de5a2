"""The torch emission's per-node module overrides: a node runs through the module given for it,
called with its run-time inputs only, and its weights are not kept twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

from hwnas.backends.emit.torch import to_torch
from hwnas.frontends.onnx import import_onnx
from hwnas.passes.testing import SEED, build_model, randn


def conv_relu() -> tuple[object, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    w, b = randn(rng, 4, 3, 3, 3), randn(rng, 4)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv.0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return import_onnx(build_model(nodes, {"x": [2, 3, 5, 5]}, ["y"], {"w": w, "b": b})), w, b


def test_a_node_runs_through_its_module() -> None:
    graph, w, b = conv_relu()
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(b))
    plain, replaced = to_torch(graph), to_torch(graph, {"conv.0": conv})  # type: ignore[arg-type]
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(plain(x), replaced(x), atol=1e-5)
    keys = set(replaced.state_dict())
    assert keys == {"overrides.n0.weight", "overrides.n0.bias"}  # w and b live in the module only
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(-1.0)
        assert float(replaced(x).abs().max()) == 0.0  # relu(-1): the module's weights are the ones used


def test_unknown_node_name_is_refused() -> None:
    graph, _, _ = conv_relu()
    with pytest.raises(ValueError, match="modules= names no node of graph 'g': 'nope'"):
        to_torch(graph, {"nope": nn.Identity()})  # type: ignore[arg-type]
