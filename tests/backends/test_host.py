"""host-cpu describes the machine it runs on: the onnxruntime microbenchmark, its JSON cache
per CPU, thread count and onnxruntime version, the `machine = "host"` target file, and reports
that say when their figures were measured on another CPU."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from hwnas.backends.cost import estimate
from hwnas.backends.cost.report import figures_machine, format_latency
from hwnas.backends.host import HostRoofline, cache_path, host_roofline
from hwnas.backends.measure import cpu_model
from hwnas.backends.target import TARGETS_DIR, Roofline, load_target
from hwnas.calibrate import Calibration
from hwnas.errors import TargetError
from tests.backends.graphs import conv_net

SHORT = 0.3  # seconds of timed kernels: enough for the figures' order of magnitude


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[HostRoofline, Path]:
    """The microbenchmark, run once for this module into a cache folder of its own."""
    folder = tmp_path_factory.mktemp("host")
    return host_roofline(duration_s=SHORT, cache_dir=folder), folder


def test_microbenchmark_measures_this_machine(measured: tuple[HostRoofline, Path]) -> None:
    r, _ = measured
    assert r.machine == cpu_model() and r.threads == 1
    assert set(r.peak_ops_per_s) == {"fp32", "int8"}
    # Any CPU of this decade: 1 GFLOP/s to 10 TFLOP/s on one thread; VNNI or not, int8 is not slower.
    assert 1e9 < r.peak_ops_per_s["fp32"] < 1e13 and r.peak_ops_per_s["int8"] > 0.8 * r.peak_ops_per_s["fp32"]
    assert 0 < r.depthwise_efficiency <= 1 and 1e-8 < r.kernel_overhead_s < 1e-3
    assert r.memory[-1].name == "DRAM" and r.memory[-1].size_bytes > 2**28
    assert all(m.bandwidth_bytes_per_s > 1e8 for m in r.memory)
    assert [m.size_bytes for m in r.memory] == sorted(m.size_bytes for m in r.memory)


def test_the_cache_is_json_per_machine_threads_and_onnxruntime(measured: tuple[HostRoofline, Path],
                                                               tmp_path: Path) -> None:
    r, folder = measured
    path = cache_path(1, folder)
    assert path.parent == folder and cache_path(2, folder) != path
    data = json.loads(path.read_text())  # JSON, not a pickle
    assert data["format"] == "hwnas-host-roofline" and HostRoofline.from_json(data) == r
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(path.read_bytes())
    # A cached file is read, not measured again: a marker put in it comes back.
    marked = tmp_path / "marked"
    marked.mkdir()
    cache_path(1, marked).write_text(json.dumps({**data, "kernels": {"marker": 1.0}}))
    assert host_roofline(cache_dir=marked).kernels == {"marker": 1.0}
    # One made with another onnxruntime is measured again, and replaced.
    stale = tmp_path / "stale"
    stale.mkdir()
    cache_path(1, stale).write_text(json.dumps({**data, "ort_version": "0.0", "kernels": {"marker": 1.0}}))
    again = host_roofline(duration_s=SHORT, cache_dir=stale)
    assert "marker" not in again.kernels and json.loads(cache_path(1, stale).read_text())["ort_version"] != "0.0"


def test_host_cpu_is_this_machine_and_epyc_zen5_keeps_the_shipped_figures() -> None:
    host = load_target("host-cpu")
    hw = host.section(Roofline)
    assert host.machine == cpu_model()
    assert set(hw.peak_ops_per_s) == {"fp32", "int8"} and hw.memory[-1].name == "DRAM"
    assert hw.pj_per_op == {"fp32": 7.0, "int8": 0.8} and hw.static_w == 5.0  # from the file
    # The measured figures are those of the cache host_roofline keeps for this machine.
    assert hw.peak_ops_per_s == host_roofline().peak_ops_per_s
    epyc = load_target("epyc-zen5")
    assert epyc.machine == "AMD EPYC" and epyc.section(Roofline).peak_ops_per_s["fp32"] == 2.4e11
    assert load_target("h100").machine == ""  # a datasheet describes no machine in particular


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.replace("static_w = 5.0", ""), "field 'roofline.static_w' is missing"),
    (lambda s: s.replace("[roofline]", "[roofline]\npeak_ops_per_s = { fp32 = 1e11 }"),
     "field 'roofline.peak_ops_per_s' is measured on this machine"),
    (lambda s: s.replace('name = "L3"', 'name = "L3"\nbandwidth_bytes_per_s = 1e10'),
     "field 'roofline.memory[1].bandwidth_bytes_per_s' is measured on this machine"),
    (lambda s: s.replace('pj_per_byte = 20.0', ''), "field 'roofline.memory[2].pj_per_byte' is missing"),
    (lambda s: s.replace('kind = "cpu"', 'kind = "gpu"'), "is for cpu targets, not gpu"),
])
def test_a_host_file_is_checked_like_any_other(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    path = tmp_path / "my-host.toml"
    path.write_text(edit((TARGETS_DIR / "host-cpu.toml").read_text()))
    with pytest.raises(TargetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_target(path)


def test_a_report_names_the_machine_of_its_figures() -> None:
    report = estimate(conv_net(), "epyc-zen5")
    assert figures_machine("AMD EPYC") == "AMD EPYC" and figures_machine("") == ""

    # A calibration's machine wins over the target file's: it priced the latencies.
    cal = Calibration("host-cpu", {"machine": "Intel(R) Xeon(R) Gold 6438N"}, [])
    assert figures_machine("AMD EPYC", cal) == "Intel(R) Xeon(R) Gold 6438N"
    elsewhere = dataclasses.replace(report, machine="Intel(R) Xeon(R) Gold 6438N")
    here = dataclasses.replace(report, machine=cpu_model())
    if cpu_model() != "Intel(R) Xeon(R) Gold 6438N":
        assert "measured on Intel(R) Xeon(R) Gold 6438N, not on this machine" in elsewhere.machine_warning
        assert elsewhere.to_json()["machine_warning"] == elsewhere.machine_warning
    assert here.machine_warning == "" and here.to_json()["machine_warning"] is None
    assert dataclasses.replace(report, machine="").machine_warning == ""
    assert here.to_json()["machine"] == cpu_model()
    assert not report.latency_is_lower_bound and not format_latency(report).startswith("≥")
    partial = dataclasses.replace(report, unpriced={"Einsum": 1})
    assert partial.latency_is_lower_bound and format_latency(partial).startswith("≥ ")
