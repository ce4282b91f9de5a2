"""IR → PyTorch: outputs match onnxruntime, weights train and flow back into the IR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.emit.torch import to_torch, weights_to_graph
from hwnas.errors import UnsupportedModelError
from hwnas.frontends import load_graph
from hwnas.search.spaces import to_graph
from hwnas.search.spaces.mobilenetv2 import MBConfig, build

from .graphs import Builder

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "small_cnn.onnx"


def _ort(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _torch(graph, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    with torch.no_grad():
        return to_torch(graph)(torch.from_numpy(x)).numpy()


def _input(graph) -> np.ndarray:  # noqa: ANN001
    return np.random.default_rng(0).standard_normal(graph.inputs[0].type.shape).astype(np.float32)


def test_light_models_match_onnxruntime(light_model: str) -> None:
    graph = load_graph(light_model)
    x = _input(graph)
    np.testing.assert_allclose(_torch(graph, x), _ort(to_onnx(graph).SerializeToString(), x), atol=1e-4)


def test_mobilenetv2_like_net_matches_onnxruntime() -> None:
    torch.manual_seed(0)
    config = MBConfig(width=0.5, resolution=64, num_classes=10)
    graph = to_graph(build(config), config.input_shape, "mbv2")
    x = _input(graph)
    np.testing.assert_allclose(_torch(graph, x), _ort(to_onnx(graph).SerializeToString(), x), atol=1e-4)


def test_trained_weights_flow_back_into_the_ir() -> None:
    graph = load_graph(EXAMPLE)
    module = to_torch(graph)
    assert sum(p.numel() for p in module.parameters()) > 1000
    x = torch.from_numpy(_input(graph))
    target = torch.zeros(1, 10)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    before = module(x).detach()
    for _ in range(5):
        opt.zero_grad()
        loss = ((module(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    after = module(x).detach()
    assert ((after - target) ** 2).mean() < ((before - target) ** 2).mean()
    weights_to_graph(module)
    np.testing.assert_allclose(_ort(to_onnx(graph).SerializeToString(), x.numpy()), after.numpy(), atol=1e-4)


def test_an_op_without_emission_is_refused() -> None:
    b = Builder((1, 4))
    node = b.g.add_node("MyOp", [b.x], name="custom", domain="com.example", output_names=["custom_y"])
    with pytest.raises(UnsupportedModelError, match="node 'custom' \\(com.example::MyOp\\): no PyTorch emission"):
        to_torch(b.done(node.outputs[0]))


def test_weights_built_by_constant_of_shape_train_and_flow_back(light_model_paths: dict[str, str]) -> None:
    graph = load_graph(light_model_paths["squeezenet"])
    built = sum(1 for n in graph.nodes if n.op == "ConstantOfShape")
    assert built > 10
    module = to_torch(graph)
    assert len(list(module.parameters())) >= built
    x = torch.from_numpy(_input(graph))
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    loss = module(x).square().mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = module(x)
    weights_to_graph(module)
    assert not any(n.op == "ConstantOfShape" for n in graph.nodes), "trained weights are constants now"
    np.testing.assert_allclose(_ort(to_onnx(graph).SerializeToString(), x.numpy()), after.numpy(), rtol=1e-4,
                               atol=1e-4 * float(after.abs().max()))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_and_gather_match_onnxruntime(mode: str) -> None:
    from hwnas.ir.attributes import Attr

    b = Builder((2, 3, 6, 6))
    pads = b.g.add_constant(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")
    value = b.g.add_constant(np.array(0.5, np.float32), "value")
    y = b.op("Pad", b.x, pads, *([value] if mode == "constant" else []), name="pad", mode=Attr.string(mode))
    shape = b.op("Shape", y, name="shape")
    idx = b.g.add_constant(np.array([0, -1], np.int64), "idx")
    dims = b.op("Gather", shape, idx, name="dims", axis=Attr.int(0))
    b.g.outputs.extend([b.op("Relu", y, name="relu"), dims])
    x = _input(b.g)
    sess = ort.InferenceSession(to_onnx(b.g).SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})
    with torch.no_grad():
        got = to_torch(b.g)(torch.from_numpy(x))
    np.testing.assert_allclose(got[0].numpy(), ref[0], atol=1e-6)
    np.testing.assert_array_equal(got[1].numpy(), ref[1])


def test_efficientnet_lite0_matches_onnxruntime() -> None:
    from hwnas.tasks import load_task
    from hwnas.tasks.evaluate import predict

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = load_task("efficientnet-lite0", num_photos=2)
        with torch.no_grad():
            got = to_torch(s.graph)(torch.from_numpy(s.test[0][:2])).numpy()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(got, predict(s.graph, s, "test")[:2], atol=1e-4)


def test_prelu_and_slice_match_onnxruntime() -> None:
    big = np.iinfo(np.int64).max
    cases = [([0], [2], [1], [1]), ([1, -3], [big, -1], [2, 3], [2, 1]), ([-1], [-big], [3], [-1]),
             ([4, 5], [0, 1], [2, 3], [-2, -3]), ([0], [100], [-1], [3])]
    for starts, ends, axes, steps in cases:
        b = Builder((2, 4, 6, 7), "prelu_slice")
        per_channel = b.g.add_constant(np.array([0.1, -0.5, 2.0, 0.0], np.float32).reshape(4, 1, 1), "slope")
        scalar = b.g.add_constant(np.array([0.25], np.float32), "scalar")
        y = b.op("PRelu", b.op("PRelu", b.x, per_channel, name="p1"), scalar, name="p2")
        inputs = [b.g.add_constant(np.array(v, np.int64), k) for k, v in
                  (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))]
        b.done(b.op("Slice", y, *inputs, name="slice"))
        x = _input(b.g)
        ref = _ort(to_onnx(b.g).SerializeToString(), x)
        got = _torch(b.g, x)
        assert got.shape == ref.shape, (starts, ends, axes, steps)
        np.testing.assert_array_equal(got, ref)
