"""Calibration: real onnxruntime measurements of a small kernel set, the fitted predictor inside
`estimate`, resuming an interrupted run, JSON without pickle, few-shot refits, and the CLI."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hwnas.backends.cost import estimate
from hwnas.backends.cost.base import node_work
from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.measure import measure_onnxruntime
from hwnas.backends.target import TARGETS_DIR, load_target
from hwnas.calibrate import (
    CalibrationError,
    calibrate,
    calibration_path,
    load_calibration,
    read_calibration,
    refit_few_shot,
    save_calibration,
)
from hwnas.calibrate.fewshot import SCALE_FLOOR, KernelSums, fit_setting, predict_from_sums
from hwnas.calibrate.fusion import view_of
from hwnas.calibrate.timing import time_kernel
from hwnas.cli import main
from hwnas.ir.graph import Graph
from hwnas.passes import PassRunner, parse_pipeline
from tests.backends.graphs import Builder, conv_net

SAMPLES = 40
REPEATS = 12
NETWORKS = 2


@pytest.fixture(scope="module")
def cal_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "host-cpu.json"
    calibrate("host-cpu", path, samples=SAMPLES, progress=False, repeats=REPEATS, networks=NETWORKS)
    return path


def canonical(graph: Graph) -> Graph:
    return PassRunner().run(parse_pipeline("canonicalize"), graph).graph


def residual_net(channels: int = 16) -> Graph:
    """conv-relu, then conv + skip -> relu (onnxruntime fuses the sum and the relu into the conv)."""
    b = Builder((1, channels, 16, 16), "residual")
    y = b.op("Relu", b.conv(b.x, channels, name="c1"), name="r1")
    s = b.op("Add", b.conv(y, channels, name="c2"), y, name="add")
    return canonical(b.done(b.op("Relu", s, name="r2")))


def test_calibration_file_holds_measured_samples(cal_file: Path) -> None:
    data = json.loads(cal_file.read_text())
    assert data["format"] == "hwnas-calibration" and data["target"] == "host-cpu"
    assert data["measured_with"]["threads"] == 1
    assert data["measured_with"]["ort_version"] == ort.__version__
    assert 0 < data["measured_with"]["profiler_bias_s"] < 1e-5
    assert len(data["samples"]) == SAMPLES
    assert {s["group"] for s in data["samples"]} >= {"conv", "depthwise", "elementwise"}
    assert all(s["latency_s"] > 0 and s["features"] for s in data["samples"])
    assert [n["index"] for n in data["networks"]] == list(range(NETWORKS))
    assert all(r[5] > 0 and r[3] for n in data["networks"] for r in n["rows"])  # seconds, features


def test_loading_fits_without_pickle(cal_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a calibration must not be unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    cal = read_calibration(cal_file)
    cal.fit_all()
    assert cal.model("conv") is not None and cal.model("reorder") is not None


def test_predict_prices_conv_of_a_real_graph(cal_file: Path) -> None:
    cal = read_calibration(cal_file)
    graph = canonical(conv_net())
    target = load_target("host-cpu")
    conv = graph.node_by_name("conv1")
    work = node_work(conv, target, target.roofline.peak_ops_per_s, graph)
    seconds = cal.predict(work)
    assert seconds is not None and 1e-7 < seconds < 1e-2
    report = estimate(graph, target, predictor=cal)
    assert report.method == "calibrated" and report.latency_s > 0
    assert any("calibrated" in c.note for c in report.nodes)


def test_fusion_rules_match_onnxruntime(cal_file: Path) -> None:
    """The residual Add and both ReLUs run inside convs; predicted layout conversions are the
    ones in onnxruntime's optimized model."""
    graph = residual_net()
    view = view_of(graph)
    roles = {n.name: view.roles.get(id(n)) for n in graph.nodes}
    assert roles["add"] is None and roles["c2"] is not None and roles["c2"].sum_fused
    assert roles["c2"].act == "Relu"
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(cal_file.parent / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(to_onnx(graph).SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    mine = [r for k in view.roles.values() if k is not None for r in k.reorders]
    assert ops.count("ReorderInput") == sum(r.to_nchwc for r in mine)
    assert ops.count("ReorderOutput") == sum(not r.to_nchwc for r in mine)
    assert ops.count("Add") == 0 and ops.count("Relu") == 0
    cal = read_calibration(cal_file)
    report = estimate(graph, "host-cpu", predictor=cal)
    assert {c.node: c.latency_s for c in report.nodes}["add"] == 0.0


def test_layout_conversions_of_a_batch_are_priced_for_the_whole_batch() -> None:
    """A conv over 16 images between two PRelus (MTCNN's R-Net: 16 face crops) converts all 16
    images each way: the fusion rules' shapes, batch folded into the rows, are the shapes
    onnxruntime's profiler reports for the conversions it runs."""
    b = Builder((16, 32, 12, 12), "batched")
    slope = b.g.add_constant(np.full((32, 1, 1), 0.1, np.float32), "slope")
    y = b.op("PRelu", b.conv(b.op("PRelu", b.x, slope, name="p1"), 32, name="c1"), slope, name="p2")
    graph = canonical(b.done(y))
    mine = sorted((int(r.to_nchwc), *r.shape) for k in view_of(graph).roles.values() if k is not None
                  for r in k.reorders)
    assert mine == [(0, 32, 16 * 12, 12), (1, 32, 16 * 12, 12)]
    measured = sorted(r[:4] for r in time_kernel(to_onnx(graph), repeats=10, budget_s=0.01).reorders)
    assert measured == mine


def test_interrupted_calibration_resumes(tmp_path: Path) -> None:
    path = tmp_path / "partial.json"

    def stop_after_three(index: int, measured: int) -> None:
        if measured == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate("host-cpu", path, samples=6, progress=False, repeats=REPEATS, on_sample=stop_after_three,
                  networks=0)
    first = read_calibration(path)
    assert sorted(s.index for s in first.samples) == [0, 1, 2]
    seen: list[int] = []
    cal = calibrate("host-cpu", path, samples=6, progress=False, repeats=REPEATS,
                    on_sample=lambda i, _: seen.append(i), networks=0)
    assert seen == [3, 4, 5]
    assert sorted(s.index for s in cal.samples) == list(range(6))
    assert cal.measured_with["profiler_bias_s"] == first.measured_with["profiler_bias_s"]
    limited = calibrate("host-cpu", path, samples=10, progress=False, repeats=REPEATS, limit=1, networks=0)
    assert len(limited.samples) == 7


def test_networks_are_profiled_between_the_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-network correction is a ratio of times inside networks to times alone: the networks
    are spread evenly over the kernels, so that a shared host's drift over the minutes of a
    calibration reaches both sides alike; an interrupted run resumes with the networks not yet done."""
    import hwnas.calibrate.store as store

    order: list[str] = []
    real = store.measure_network

    def recorded(target, index, *args):  # type: ignore[no-untyped-def]
        order.append(f"n{index}")
        return real(target, index, *args)

    monkeypatch.setattr(store, "measure_network", recorded)

    def stop_after_three(index: int, measured: int) -> None:
        order.append(f"k{index}")
        if measured == 3:
            raise KeyboardInterrupt

    path = tmp_path / "c.json"
    with pytest.raises(KeyboardInterrupt):
        calibrate("host-cpu", path, samples=4, progress=False, repeats=REPEATS, networks=2, on_sample=stop_after_three)
    assert order == ["k0", "n0", "k1", "k2"]
    assert [n.index for n in read_calibration(path).networks] == [0]
    cal = calibrate("host-cpu", path, samples=4, progress=False, repeats=REPEATS, networks=2,
                    on_sample=lambda i, _: order.append(f"k{i}"))
    assert order[4:] == ["k3", "n1"] and sorted(n.index for n in cal.networks) == [0, 1]
    assert all(n.rows and n.wall_s > 0 for n in cal.networks)


def test_resuming_with_other_threads_is_refused(cal_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    shutil.copy(cal_file, path)
    with pytest.raises(CalibrationError, match="threads"):
        calibrate("host-cpu", path, samples=SAMPLES + 1, threads=2, progress=False)


def test_few_shot_refit_moves_toward_measured(cal_file: Path, tmp_path: Path) -> None:
    cal = read_calibration(cal_file)
    target = load_target("host-cpu")
    graphs = [canonical(conv_net(hw, ch, f"net{hw}")) for hw, ch in ((32, 32), (48, 16), (24, 64))]
    base = [estimate(g, target, predictor=cal).latency_s for g in graphs]
    measured = [measure_onnxruntime(to_onnx(g), threads=2, warmup=5, repeats=20).median_s for g in graphs]
    refit = refit_few_shot(cal, graphs, measured, "threads2", target=target)
    after = [estimate(g, target, predictor=refit).latency_s for g in graphs]
    # The refit minimizes the squared relative error (plus a pull toward the calibrated setting,
    # which the calibrated setting itself does not pay): on the models it saw, that error falls,
    # however noisy the 2-thread measurements on a shared machine are.
    err = sum((p / m - 1) ** 2 for p, m in zip(base, measured, strict=True))
    assert sum((p / m - 1) ** 2 for p, m in zip(after, measured, strict=True)) < err
    # A made-up slowdown is followed too: one model, 3x slower than predicted.
    slow = refit_few_shot(cal, graphs[:1], [3 * base[0]], "slow", target=target)
    assert abs(estimate(graphs[0], target, predictor=slow).latency_s / (3 * base[0]) - 1) < 0.2
    # The setting is stored in the file and chosen by name when loading.
    path = tmp_path / "c.json"
    save_calibration(refit, path)
    loaded = load_calibration(target, path, setting="threads2")
    assert loaded is not None and loaded.setting == "threads2"
    assert estimate(graphs[1], target, predictor=loaded).latency_s == pytest.approx(after[1])
    assert load_calibration(target, path).setting is None
    with pytest.raises(CalibrationError, match="no setting 'nope'"):
        load_calibration(target, path, setting="nope")


def test_few_shot_never_sets_a_scale_to_zero() -> None:
    # Two models: conv and pool kernels in one, conv alone in the other, measured so that the
    # least-squares answer wants pool's scale below zero (conv x2 explains the second model,
    # and then over-explains the first). Non-negative least squares clips it to exactly 0.
    sums = [KernelSums({"conv": 1e-3, "pool": 1e-3}, 2, 0.0), KernelSums({"conv": 1e-3}, 1, 0.0)]
    measured = [1e-3, 2e-3]
    assert fit_setting("nnls", sums, measured, floor=0.0).scales["pool"] == 0.0
    fitted = fit_setting("floored", sums, measured)
    assert fitted.scales["pool"] == pytest.approx(SCALE_FLOOR) and fitted.scales["pool"] > 0
    assert fitted.scales["conv"] > 1  # the rest of the fit still follows the measurements
    # A model made only of pool kernels is no longer priced as free.
    assert predict_from_sums(fitted, KernelSums({"pool": 1e-3}, 1, 0.0)) >= SCALE_FLOOR * 1e-3


def test_calibration_paths(tmp_path: Path) -> None:
    assert calibration_path(load_target("host-cpu")).name == "host-cpu.json"
    assert "hwnas" in calibration_path(load_target("host-cpu")).parts
    board = tmp_path / "board.toml"
    board.write_text((TARGETS_DIR / "host-cpu.toml").read_text().replace('name = "host-cpu"', 'name = "board"'))
    assert calibration_path(load_target(board)) == tmp_path / "board.calib.json"
    assert load_calibration(board) is None


def test_bad_calibration_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CalibrationError, match="not a calibration file"):
        read_calibration(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CalibrationError, match="not a calibration file"):
        read_calibration(bad)


@pytest.mark.parametrize("argv, message", [
    (["--target", "cortex-a76"], "not this machine"),
    (["--target", "h100"], "only CPU targets"),
    (["--target", "nosuch"], "unknown target"),
    (["--samples", "0"], "--samples"),
    (["--threads", "0"], "--threads"),
    (["--networks", "-1"], "--networks must be 0 or more"),
    (["--setting", "x"], "--few-shot"),
    (["--families", "conv,lstm"], "--families: unknown kernel family lstm"),
    (["--roofline", "--threads", "0"], "--threads"),
    (["--roofline"], "--roofline measures host-cpu's roofline only"),  # with --out
])
def test_cli_bad_inputs(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--out", str(tmp_path / "c.json"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("hwnas: error:") and message in err
    assert not (tmp_path / "c.json").exists()


def test_cli_calibrates_and_refits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.json"
    assert main(["calibrate", "--samples", "4", "--networks", "1", "--out", str(path)]) == 0
    assert len(read_calibration(path).samples) == 4 and len(read_calibration(path).networks) == 1
    assert re.search(r"calibrated host-cpu: 4 kernels and 1 network \(1 thread\) in \d+ s -> ", capsys.readouterr().err)
    model = tmp_path / "net.onnx"
    onnx.save(to_onnx(canonical(conv_net())), model)
    assert main(["calibrate", "--out", str(path), "--few-shot", str(model), "--threads", "2"]) == 0
    assert "threads2" in read_calibration(path).settings
    assert re.search(r"per kernel \(in \d+ s\) -> ", capsys.readouterr().err)
    assert main(["calibrate", "--out", str(tmp_path / "none.json"), "--few-shot", str(model)]) == 2
    assert "no calibration to refit" in capsys.readouterr().err


def test_elapsed_reads_as_people_read_it() -> None:
    from hwnas.cli.calibrate_cmd import elapsed

    assert elapsed(42.4) == "42 s" and elapsed(396) == "6.6 min (396 s)"


def test_calibrating_on_a_busy_machine_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Kernel times taken while other work holds the cores are not the machine's own: the command
    says so (the load average before or after the run above half the cores), and not otherwise."""
    import os

    out = tmp_path / "cal.json"
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert main(["calibrate", "--samples", "1", "--networks", "0", "--out", str(out)]) == 0
    said = "".join(capsys.readouterr())
    assert "calibrated host-cpu: 1 kernels" in said and "machine was busy" not in said
    # The run's own thread shows in the load average after it: that is not someone else's load.
    loads = iter([0.0, 1.05])
    monkeypatch.setattr(os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    assert main(["calibrate", "--samples", "2", "--networks", "0", "--out", str(out)]) == 0
    assert "machine was busy" not in "".join(capsys.readouterr())
    monkeypatch.setattr(os, "getloadavg", lambda: (8.0, 8.0, 8.0))
    assert main(["calibrate", "--samples", "3", "--networks", "0", "--out", str(out)]) == 0
    said = "".join(capsys.readouterr())
    assert "the machine was busy (load average 8.0" in said and "kernel times are not this machine's own" in said


def test_a_prelu_is_timed_on_signs_in_patches() -> None:
    # onnxruntime's PRelu branches on each sign: independent signs would price its worst case,
    # which no network feeds it; the other kernels keep independent draws.
    import numpy as np

    from hwnas.calibrate.kernels import build
    from hwnas.calibrate.timing import kernel_inputs

    def sign_changes(x: np.ndarray) -> float:
        s = np.sign(x).reshape(-1, x.shape[-1])
        return float((s[:, 1:] != s[:, :-1]).mean())

    for op, patches in (("PRelu", True), ("Relu", False)):
        spec = {"family": "elementwise", "op": op, "c": 8, "h": 40, "w": 40, "variant": "channel", "rank": 4}
        (x,) = kernel_inputs(build(spec)).values()
        assert 0.3 < (x > 0).mean() < 0.7
        assert (sign_changes(x) < 0.25) is patches
