"""Hardware-aware training on real aihwkit tiles: noise is injected into the analog weights while
training (and not at test time), the trained state round-trips through weights_only, and
`hwnas analog train` reports before/after and refuses bad input in one line, writing nothing."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.analog.convert import analog_state_dict, load_analog_state, to_analog
from hwnas.analog.train import hwa_train, inject_noise
from hwnas.cli import main
from hwnas.compress.finetune import FinetuneConfig
from hwnas.ir.graph import Graph
from hwnas.passes import parse_pipeline
from tests.analog.test_analog_cli import digits_files, error  # noqa: F401  (digits_files: a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

Data = tuple[Graph, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@pytest.fixture(scope="module")
def digits() -> Data:
    from hwnas.tasks import load_task

    task = load_task("digits-cnn")
    graph = task.graph.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # map-analog's one-line summary
        parse_pipeline("canonicalize,map-analog").run(graph)
    (x, y), (xt, yt) = task.train, task.test
    return graph, (x[:192], y[:192]), (xt[:150], yt[:150])


def weights(model: object) -> dict[str, torch.Tensor]:
    return {name: layer.get_weights()[0].clone() for name, layer in model.layers.items()}  # type: ignore[attr-defined]


def test_noise_is_injected_while_training_and_not_when_testing(digits: Data) -> None:
    graph, _, (x, _) = digits
    model = to_analog(graph)
    inject_noise(model, 0.2)
    batch = torch.from_numpy(x[:32])
    model.module.train()
    with torch.no_grad():
        noisy = model.module(batch)
        for layer in model.layers.values():
            for tile in layer.analog_tiles():  # type: ignore[operator]
                tile.post_update_step()  # a fresh draw, as after each optimizer step
        noisier = model.module(batch)
    model.module.eval()
    clean = model.logits(x[:32])
    assert not torch.allclose(noisy, noisier)  # redrawn every step
    mean_shift = float((noisy.numpy() - clean).std())
    assert mean_shift > 0.05 * float(np.abs(clean).std())  # 20% weight noise moves the logits ...
    ideal = to_analog(graph)
    assert np.abs(ideal.logits(x[:32]) - clean).max() < mean_shift  # ... and none of it stays for inference


def test_remap_keeps_the_weights_and_clipping_cuts_the_outliers(digits: Data) -> None:
    graph = digits[0]
    start = weights(to_analog(graph))
    remapped = to_analog(graph)
    inject_noise(remapped, 0.0)  # columns rescaled to [-1, 1], the scales moved to the periphery
    clipped = to_analog(graph)
    inject_noise(clipped, 0.0, clip_sigma=1.0)
    for name, w in weights(remapped).items():
        assert torch.allclose(w, start[name], atol=1e-5 * float(start[name].abs().max()))
    for name, w in weights(clipped).items():
        assert float(w.abs().max()) < 0.8 * float(start[name].abs().max()), name


def test_hwa_training_changes_the_analog_weights_and_round_trips(digits: Data) -> None:
    graph, train, (x, y) = digits
    config = FinetuneConfig(epochs=1, lr=1e-3, batch_size=64, seed=3)
    steps: list[tuple[int, int]] = []
    trained = hwa_train(graph, "analog-pcm", train, config, noise=0.06, distill=True,
                        progress=lambda step, total, loss: steps.append((step, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)] and len(trained.losses) == 1 and np.isfinite(trained.losses[0])
    plain = hwa_train(graph, "analog-pcm", train, config, noise=0.0, distill=True)
    start = weights(to_analog(graph))
    after, without_noise = weights(trained.model), weights(plain.model)
    for name in start:  # training moved every analog layer, and the noise changed where it went
        assert not torch.allclose(after[name], start[name]) and not torch.allclose(after[name], without_noise[name])
    acc = float((trained.model.logits(x).argmax(1) == y).mean())
    assert acc > 0.9, acc  # still a digits classifier (the float model: 99%)
    buf = io.BytesIO()
    torch.save(analog_state_dict(trained.model), buf)
    buf.seek(0)
    fresh = to_analog(graph)
    load_analog_state(fresh, torch.load(buf, weights_only=True))
    assert all(torch.equal(w, after[name]) for name, w in weights(fresh).items())


def test_hwa_train_refuses_bad_arguments(digits: Data) -> None:
    graph, (x, y), _ = digits
    with pytest.raises(ValueError, match="one label per input"):
        hwa_train(graph, "analog-pcm", (x, y[:-1]))
    with pytest.raises(ValueError, match="0 <= noise < 1"):
        hwa_train(graph, "analog-pcm", (x, y), noise=1.5)
    with pytest.raises(ValueError, match="clip_sigma is a number of standard deviations"):
        hwa_train(graph, "analog-pcm", (x, y), clip_sigma=-1)


def test_train_command_reports_before_and_after_and_writes_the_state(
        digits_files: tuple[Path, Path],  # noqa: F811  (the CLI tests' fixture)
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = digits_files
    state, doc_path = tmp_path / "digits.aihwkit.pt", tmp_path / "train.json"
    rc = main(["analog", "train", str(model), "--data", str(data), "-o", str(state), "--epochs", "1",
               "--times", "1d", "--repeats", "1", "--distill", "--json", str(doc_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for text in ("float (digital)", "1 d", "150 test samples, 1 programmings", "trained 1 epochs on 200 samples",
                 "noise 0.06, distilled"):
        assert text in captured.out, text
    doc = json.loads(doc_path.read_text())
    assert [p["t_s"] for p in doc["before"]] == [86400.0] == [p["t_s"] for p in doc["after"]]
    assert len(doc["losses"]) == 1 and doc["distill"] and len(doc["analog_layers"]) == 6
    loaded = torch.load(state, weights_only=True)
    assert any(k.endswith("shared_weights") for k in loaded)
    # `analog eval --state` simulates the trained tiles: the same figure, up to aihwkit's unseeded ADC noise
    evaluated = tmp_path / "eval.json"
    rc = main(["analog", "eval", str(model), "--data", str(data), "--state", str(state), "--times", "1d",
               "--repeats", "1", "--json", str(evaluated)])
    assert rc == 0, capsys.readouterr().err
    again = json.loads(evaluated.read_text())["times"][0]["mean"]
    assert abs(again - doc["after"][0]["mean"]) <= 0.02, (again, doc["after"])
    wrong = tmp_path / "wrong.pt"
    torch.save({"overrides.n9.weight": torch.zeros(3)}, wrong)
    capsys.readouterr()
    assert main(["analog", "eval", str(model), "--data", str(data), "--state", str(wrong), "--repeats", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # after map-analog's one-line summary
    assert [line for line in err if "error" in line] == err[-1:] and "does not fit this model" in err[-1]
    assert "overrides.n9.weight" in err[-1]
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert "not a state written by hwnas analog train" in error(
        capsys, ["analog", "eval", str(model), "--data", str(data), "--state", str(tmp_path / "junk.pt")])


def test_train_bad_input_is_one_line_and_writes_nothing(
        digits_files: tuple[Path, Path],  # noqa: F811  (the CLI tests' fixture)
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = digits_files
    state, doc_path = tmp_path / "out.pt", tmp_path / "train.json"
    base = ["analog", "train", str(model), "--data", str(data), "-o", str(state), "--json", str(doc_path)]
    assert "--epochs must be a positive number" in error(capsys, [*base, "--epochs", "0"])
    assert "--epochs must be a positive number" in error(capsys, [*base, "--epochs", "nan"])
    assert "--lr must be positive" in error(capsys, [*base, "--lr", "-1"])
    assert "--noise is relative" in error(capsys, [*base, "--noise", "1.5"])
    assert "--times: 'x' is not a time" in error(capsys, [*base, "--times", "1,x"])
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((10, 1, 7, 7), np.float32), y=np.zeros(10, np.int64))
    assert "'x' has shape [10, 1, 7, 7]" in error(capsys, ["analog", "train", str(model), "--data", str(wrong),
                                                          "-o", str(state), "--json", str(doc_path)])
    assert "folder" in error(capsys, [*base[:5], "-o", str(tmp_path / "no" / "out.pt")])
    assert "is a cpu target" in error(capsys, [*base, "--target", "host-cpu"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.npz"]
