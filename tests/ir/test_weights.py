"""Each weight counted once: `graph_weights` against counts made from onnx and torch directly."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from hwnas.backends.cost import estimate
from hwnas.frontends.onnx import import_onnx
from hwnas.frontends.torch import import_torch
from hwnas.ir.registry import graph_weights, op_counts


def onnx_weight_count(model: onnx.ModelProto) -> int:
    """Elements of the real weights of a light model, from onnx alone: float initializers,
    and the tensors its ConstantOfShape nodes build (its weights are stored that way)."""
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    total = sum(a.size for a in arrays.values() if a.dtype.kind == "f")
    for n in model.graph.node:
        if n.op_type == "ConstantOfShape":
            total += int(np.prod(arrays[n.input[0]]))
    return total


def test_inception_v1_counts_each_weight_once(light_model_paths: dict[str, str]) -> None:
    path = light_model_paths["inception_v1"]
    graph = import_onnx(path)
    weights = graph_weights(graph)
    want = onnx_weight_count(onnx.load(path))
    assert want == 6_998_552  # the classifier's 1000x1024 weight is read through a Reshape
    assert weights.params == want
    # Summed node by node with the attribution, as `hwnas inspect` does.
    assert sum(c.params for n in graph.nodes if (c := op_counts(n, weights=weights)) is not None) == want
    # The Reshape of the classifier weight is folded at compile time: the Gemm owns it.
    reshape = next(n for n in graph.nodes if n.op == "Reshape" and n.operand(0).name == "loss3/classifier_w_0")
    assert weights.of(reshape) == ()
    gemm = next(n for n in graph.nodes if n.op == "Gemm")
    assert reshape.outputs[0] in weights.of(gemm)
    # A cost model stores the same bytes.
    assert estimate(graph, "host-cpu").weight_bytes == weights.nbytes == 4 * want


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True),
                                 num_layers=2, enable_nested_tensor=False)


def test_transformer_encoder_params_match_torch() -> None:
    module = _encoder()  # fresh: its two layers are copies with equal values, kept apart
    want = sum(p.numel() for p in module.parameters())
    graph = import_torch(module, torch.randn(2, 5, 32))
    weights = graph_weights(graph)
    assert weights.params == want == 17_088
    assert estimate(graph, "host-cpu").weight_bytes == weights.nbytes == 4 * want


def test_shared_weight_counts_once_and_is_read_as_activation_by_the_second_node() -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"]),
             helper.make_node("Identity", ["w"], ["w2"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w])
    graph = import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    weights = graph_weights(graph)
    assert weights.params == 16
    first, second = (n for n in graph.nodes if n.op == "MatMul")
    assert len(weights.of(first)) == 1 and weights.of(second) == ()
    report = estimate(graph, "host-cpu")
    assert report.weight_bytes == 64
    # Without the attribution (one node on its own) the node counts what it reads.
    c = op_counts(second)
    assert c is not None and c.params == 16
