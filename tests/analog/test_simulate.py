"""aihwkit simulation on real C++ inference tiles: settings from the target file, tiles as
map-analog placed them, the digits CNN near float at 1 s and not better after 30 days of
uncompensated drift, placed layers the simulation leaves digital, and the saved state."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from onnx import helper

from hwnas.analog.config import rpu_config
from hwnas.analog.convert import analog_state_dict, load_analog_state, to_analog
from hwnas.analog.evaluate import drift_accuracy
from hwnas.analog.times import format_time, parse_times
from hwnas.backends.emit.torch import to_torch
from hwnas.backends.target import Analog, load_target
from hwnas.frontends.onnx import import_onnx
from hwnas.passes import parse_pipeline
from hwnas.passes.map_analog import MapAnalog
from hwnas.passes.testing import SEED, build_model, randn
from tests.passes.test_map_analog import small_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits() -> tuple[object, np.ndarray, np.ndarray]:
    from hwnas.tasks import load_task

    task = load_task("digits-cnn")
    graph = task.graph.copy()
    parse_pipeline("canonicalize").run(graph)  # BatchNorm folded into the convolutions, as the chip holds them
    x, y = task.test
    return graph, x[:270], y[:270]


def test_rpu_config_comes_from_the_target() -> None:
    hw = load_target("analog-pcm").section(Analog)
    cfg = rpu_config(hw)
    assert cfg.forward.inp_res == pytest.approx(1 / 254) and cfg.forward.out_res == pytest.approx(1 / 254)  # 8 bits
    assert (cfg.mapping.max_input_size, cfg.mapping.max_output_size) == (256, 256)
    assert isinstance(cfg.noise_model, PCMLikeNoiseModel) and cfg.noise_model.g_max == 25.0
    assert isinstance(cfg.drift_compensation, GlobalDriftCompensation)
    small = rpu_config(hw, input_bits=4, tile_rows=32, tile_cols=16, compensation=False)
    assert small.forward.inp_res == pytest.approx(1 / 14) and small.drift_compensation is None
    assert (small.mapping.max_input_size, small.mapping.max_output_size) == (32, 16)


def test_aihwkit_splits_layers_over_the_tiles_map_analog_placed(recwarn: pytest.WarningsRecorder) -> None:
    graph = import_onnx(small_cnn())
    MapAnalog(tile_rows=32, tile_cols=32).run(graph)
    model = to_analog(graph)
    placed = {n.name: n.ann.placement.tiles for n in graph.nodes if n.ann.placement and n.ann.placement.analog}
    # The depthwise layer is placed (block-diagonally) but aihwkit 1.2 has no grouped convolution.
    assert set(model.layers) == {"conv1", "conv2", "gemm"}
    assert model.digital["dw"] == "not simulated on tiles: aihwkit 1.2 has no grouped convolution (group=40)"
    assert model.digital["mm"] == "its weights are computed at run time (not a constant)"
    for name, layer in model.layers.items():
        assert layer.analog_tile_count() == placed[name], name  # type: ignore[operator]
    aihwkit_warnings = [str(w.message) for w in recwarn if "aihwkit simulation leaves" in str(w.message)]
    assert aihwkit_warnings == ["the aihwkit simulation leaves 1 placed layer(s) digital: 'dw' (Conv): "
                                "aihwkit 1.2 has no grouped convolution (group=40)"]


def _ideal_target(tmp_path: object) -> object:
    """analog-pcm with the noise model and the output noise off."""
    target = load_target("analog-pcm")
    text = target.path.read_text().replace('noise_model = "pcm"', 'noise_model = "none"').replace(  # type: ignore[union-attr]
        "output_noise = 0.04", "output_noise = 0.0")
    ideal = tmp_path / "ideal.toml"  # type: ignore[operator]
    ideal.write_text(text)
    return ideal


def test_ideal_tiles_match_the_float_model(tmp_path: object) -> None:
    """With the noise model off and 8-bit converters the analog model stays near the float one
    (it checks the weights went in the right orientation: Gemm transB, MatMul, Conv)."""
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "g", "gb"], ["h"], name="gemm", alpha=0.5, beta=2.0),
             helper.make_node("MatMul", ["h", "m"], ["y"], name="mm")]
    weights = {"w": randn(rng, 4, 2, 3, 3) * 0.3, "g": randn(rng, 64, 6) * 0.2, "gb": randn(rng, 6),
               "m": randn(rng, 6, 3)}
    graph = import_onnx(build_model(nodes, {"x": [5, 2, 4, 4]}, ["y"], weights))
    model = to_analog(graph, _ideal_target(tmp_path))
    assert set(model.layers) == {"conv", "gemm", "mm"}
    x = rng.standard_normal((5, 2, 4, 4)).astype(np.float32)
    with torch.no_grad():
        ref = to_torch(graph)(torch.from_numpy(x)).numpy()
    model.program()
    model.drift(1.0)
    got = model.logits(x)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_digits_cnn_near_float_at_one_second_and_drift_without_compensation(digits: tuple) -> None:
    graph, x, y = digits
    with torch.no_grad():
        float_acc = float((to_torch(graph)(torch.from_numpy(x)).numpy().argmax(1) == y).mean())
    compensated = drift_accuracy(to_analog(graph), x, y, [1.0], repeats=1, seed=0)
    assert abs(compensated[0].mean - float_acc) <= 0.03, (compensated[0].mean, float_acc)
    uncompensated = drift_accuracy(to_analog(graph, compensation=False), x, y, [1.0, 2592000.0], repeats=1, seed=0)
    one_s, thirty_d = uncompensated
    assert thirty_d.mean <= one_s.mean
    assert thirty_d.mean < float_acc - 0.2  # drift shrinks the conductances unevenly: far below float


def test_state_dict_loads_with_weights_only_and_back(digits: tuple) -> None:
    graph = digits[0]
    model = to_analog(graph)
    model.program()
    state = analog_state_dict(model)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    fresh = to_analog(graph)
    name = next(iter(model.layers))
    before = fresh.layers[name].get_weights()[0]  # type: ignore[operator]
    load_analog_state(fresh, loaded)
    after, expected = fresh.layers[name].get_weights()[0], model.layers[name].get_weights()[0]  # type: ignore[operator]
    assert torch.equal(after, expected) and not torch.equal(before, expected)  # programming noise came back


def test_times_parse() -> None:
    assert parse_times("1, 3600,1d,30d,2.5h") == [1.0, 3600.0, 86400.0, 2592000.0, 9000.0]
    assert [format_time(t) for t in (1.0, 3600.0, 2592000.0, 1.5)] == ["1 s", "1 h", "30 d", "1.5 s"]
    for bad, message in (("1,,2", "'' is not a time"), ("1,x", "'x' is not a time"), ("0", "must be positive"),
                         ("inf", "must be positive and finite")):
        with pytest.raises(ValueError, match=message):
            parse_times(bad)


def test_no_warning_when_every_layer_converts(digits: tuple) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = to_analog(digits[0])
    assert len(model.layers) == 6 and not model.digital


def test_an_lstm_runs_its_w_and_r_on_the_tiles_map_analog_placed(tmp_path: object) -> None:
    """W and R of each direction on aihwkit tiles (18 of 32x32, as placed), the gates in torch:
    near the float model on ideal tiles, away from it under PCM noise; the state loads back."""
    from tests.passes.test_map_analog import lstm_model

    graph = import_onnx(lstm_model())
    MapAnalog(tile_rows=32, tile_cols=32).run(graph)
    rng = np.random.default_rng(SEED)
    inputs = [torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in ((6, 1, 40), (2, 1, 20), (2, 1, 20))]
    with torch.no_grad():
        ref = to_torch(graph)(*inputs).numpy()
    outputs = {}
    for name, target in (("ideal", _ideal_target(tmp_path)), ("pcm", "analog-pcm")):
        model = to_analog(graph, target)
        assert set(model.layers) == {"lstm", "fc"} and not model.digital
        assert model.layers["lstm"].analog_tile_count() == 18  # type: ignore[operator]
        torch.manual_seed(0)
        model.program()
        model.drift(86400.0)
        with torch.no_grad():
            outputs[name] = model.module(*inputs).numpy()
    # 8-bit DACs and ADCs through six steps of two directions: within a tenth, and well correlated.
    assert np.abs(outputs["ideal"] - ref).max() < 0.12 * np.abs(ref).max()
    assert np.corrcoef(outputs["ideal"].ravel(), ref.ravel())[0, 1] > 0.98
    assert np.abs(outputs["pcm"] - ref).max() > np.abs(outputs["ideal"] - ref).max()
    programmed = to_analog(graph, "analog-pcm")
    programmed.program()
    fresh = to_analog(graph, "analog-pcm")
    load_analog_state(fresh, analog_state_dict(programmed))
    for part in ("w", "r"):
        expected = getattr(programmed.layers["lstm"], part)[1].get_weights()[0]
        assert torch.equal(getattr(fresh.layers["lstm"], part)[1].get_weights()[0], expected)  # programming noise too


@pytest.mark.parametrize(("op", "before"), [("GRU", 0), ("GRU", 1), ("RNN", 0)])
def test_a_gru_or_rnn_on_ideal_tiles_stays_near_the_float_model(tmp_path: object, op: str, before: int) -> None:
    """Without linear_before_reset a GRU's reset gate scales h before R: R's tiles are driven twice."""
    rng = np.random.default_rng(SEED)
    gates = 3 if op == "GRU" else 1
    attrs = {"linear_before_reset": before} if op == "GRU" else {}
    nodes = [helper.make_node(op, ["x", "w", "r", "b"], ["y", "h"], name="cell", hidden_size=16, **attrs)]
    weights = {"w": randn(rng, 1, 16 * gates, 24) * 0.3, "r": randn(rng, 1, 16 * gates, 16) * 0.3,
               "b": randn(rng, 1, 32 * gates) * 0.1}
    graph = import_onnx(build_model(nodes, {"x": [5, 2, 24]}, ["y", "h"], weights))
    x = torch.from_numpy(rng.standard_normal((5, 2, 24)).astype(np.float32))
    with torch.no_grad():
        ref = to_torch(graph)(x)[0].numpy()
    model = to_analog(graph, _ideal_target(tmp_path))
    assert set(model.layers) == {"cell"}
    model.program()
    with torch.no_grad():
        got = model.module(x)[0].numpy()
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99
