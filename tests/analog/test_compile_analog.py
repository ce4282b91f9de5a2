"""`hwnas compile --target analog-pcm`: the graph placed by map-analog, the placement in the cost
report, and the aihwkit model's state beside the ONNX (weights_only), staged with the others."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from hwnas.analog.convert import load_analog_state, to_analog
from hwnas.backends.target import load_target
from hwnas.cli import main
from hwnas.compile import compile
from hwnas.errors import OutputError
from hwnas.frontends.onnx import import_onnx
from tests.passes.test_map_analog import small_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ideal(tmp_path: Path) -> Path:
    """analog-pcm with the device noise and the ADC noise off: the simulation is deterministic."""
    text = load_target("analog-pcm").path.read_text()  # type: ignore[union-attr]
    text = text.replace('noise_model = "pcm"', 'noise_model = "none"').replace("output_noise = 0.04",
                                                                              "output_noise = 0.0")
    path = tmp_path / "ideal-pcm.toml"
    path.write_text(text)
    return path


def test_compile_writes_the_aihwkit_state_and_the_placement(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "small.onnx"
    onnx.save(small_cnn(), model)
    out = tmp_path / "small_pcm.onnx"
    assert main(["compile", str(model), "-t", "analog-pcm", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    state = tmp_path / "small_pcm.aihwkit.pt"
    assert f"wrote {out}, {tmp_path / 'small_pcm.cost.json'}, {tmp_path / 'small_pcm.cost.html'}, {state}" in \
        captured.err
    doc = json.loads((tmp_path / "small_pcm.cost.json").read_text())
    assert doc["pipeline"] == "canonicalize,map-analog"
    placement = doc["analog_placement"]
    assert sorted(placement["analog"]) == ["conv1", "conv2", "dw", "gemm"]
    assert placement["analog"]["conv1"] == {"op": "Conv", "tiles": [0]}
    assert list(placement["digital"]) == ["mm"] and "run time" in placement["digital"]["mm"]["reason"]
    loaded = torch.load(state, weights_only=True)
    assert sum(k.endswith("shared_weights") for k in loaded) == 3  # conv1, conv2, gemm (aihwkit has no grouped conv)


def test_the_state_loads_into_a_fresh_model_with_equal_outputs(ideal: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # map-analog's summary, aihwkit refusing the depthwise layer
        compiled = compile(import_onnx(small_cnn()), ideal)
        paths = compiled.write(tmp_path / "m.onnx")
        assert paths[-1] == tmp_path / "m.aihwkit.pt"
        converted = to_analog(compiled.graph, ideal)
        other = compiled.graph.copy()
        for v in other.constants.values():  # a model with other weights, so loading has something to do
            if v.const is not None and v.const.dtype == np.float32:
                v.const = v.const * 0.5
        fresh = to_analog(other, ideal)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((4, 1, 8, 8)).astype(np.float32))
    m = torch.from_numpy(rng.standard_normal((10, 10)).astype(np.float32))
    with torch.no_grad():
        want = converted.module(x, m)
        assert not torch.allclose(fresh.module(x, m), want)
        load_analog_state(fresh, torch.load(paths[-1], weights_only=True))
        got = fresh.module(x, m)
    assert torch.equal(got, want)
    import onnxruntime as ort  # and that model is the ONNX artifact's, up to 8-bit converters

    sess = ort.InferenceSession(str(paths[0]), providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {"x": x[i : i + 1].numpy(), "m": m.numpy()})[0] for i in range(4)])
    assert np.abs(got.numpy() - ref).max() < 0.1 * np.abs(ref).max()


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compile(import_onnx(small_cnn()), "analog-pcm")
    assert compiled.analog_state is not None
    (tmp_path / "m.aihwkit.pt").mkdir()  # the state cannot be moved into place
    with pytest.raises(OutputError, match="it is a directory"):
        compiled.write(tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.aihwkit.pt"]
