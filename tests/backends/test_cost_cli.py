"""`hwnas cost` and cost-annotated `hwnas dump`: tables, JSON, plots, DOT, HTML (rendered in
headless Chromium), and the one-line errors for bad targets and outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.backends.cost import estimate
from hwnas.backends.cost.report import format_joules, format_seconds
from hwnas.backends.render.html import render_html
from hwnas.backends.target import TARGETS_DIR
from hwnas.cli import main
from hwnas.frontends import load_graph
from hwnas.ir.dot import to_dot
from hwnas.ir.registry import is_priced
from hwnas.ir.text import parse_graph
from hwnas.passes import PassRunner, parse_pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "small_cnn.onnx"
RESNET50 = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light/light_resnet50.onnx"
CHROMIUM = shutil.which("chromium")


def _canonical(path: Path):  # noqa: ANN202
    return PassRunner().run(parse_pipeline("canonicalize"), load_graph(path)).graph


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = [ln for ln in (captured.out + captured.err).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("hwnas: error: ")
    return lines[0]


@pytest.fixture
def unpriced_model(tmp_path: Path) -> Path:
    """A model with an op the registry does not price (a determinant)."""
    node = helper.make_node("Det", ["a"], ["c"], name="det")
    relu = helper.make_node("Relu", ["c"], ["d"], name="act")
    g = helper.make_graph([node, relu], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 2, 2])],
                          [helper.make_tensor_value_info("d", TensorProto.FLOAT, [3])])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_cost_table_on_two_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", str(EXAMPLE), "--target", "host-cpu,h100"]) == 0
    out = capsys.readouterr().out
    graph = _canonical(EXAMPLE)
    for target in ("host-cpu", "h100"):
        report = estimate(graph, target)
        assert target in out
        assert format_seconds(report.latency_s) in out and format_joules(report.energy_j) in out
    assert "totals" in out and "peak memory" in out and "fits" in out
    assert "/body/body.3/Conv" in out and "compute" in out
    # Fused activations are hidden unless asked for.
    assert "/body/body.2/Relu" not in out and "--all shows them" in out
    assert main(["cost", str(EXAMPLE), "--target", "host-cpu", "--all"]) == 0
    assert "/body/body.2/Relu" in capsys.readouterr().out


def test_cost_json_totals_are_the_sum_of_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", str(EXAMPLE), "-t", "host-cpu,h100", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == str(EXAMPLE) and list(doc["targets"]) == ["host-cpu", "h100"]
    for report in doc["targets"].values():
        assert {"latency_s", "energy_j", "peak_memory_bytes", "nodes", "fits", "unpriced"} <= set(report)
        assert report["latency_is_lower_bound"] is False  # every node priced: the latency is the total
    cpu = doc["targets"]["host-cpu"]
    assert sum(n["latency_s"] for n in cpu["nodes"]) == pytest.approx(cpu["latency_s"])
    assert cpu["latency_s"] > 0 and cpu["energy_j"] > 0 and cpu["peak_memory_bytes"] > 0
    # Without canonicalize nothing is fused: the Relu is priced on its own.
    assert main(["cost", str(EXAMPLE), "-t", "host-cpu", "--json", "--passes", ""]) == 0
    raw = json.loads(capsys.readouterr().out)["targets"]["host-cpu"]
    assert {n["bound"] for n in raw["nodes"]}.isdisjoint({"fused"})
    assert "fused" in {n["bound"] for n in cpu["nodes"]}


def test_cost_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "cost.png"
    assert main(["cost", str(EXAMPLE), "-t", "host-cpu,h100", "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["cost.png"]  # no temporary left behind


def test_unknown_target_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", str(EXAMPLE), "-t", "host-cpu,no-such-board"]) == 2
    assert "no-such-board" in _error_line(capsys)


def test_target_file_missing_a_field_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (TARGETS_DIR / "host-cpu.toml").read_text()
    broken = tmp_path / "broken.toml"
    broken.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("static_w")))
    assert main(["cost", str(EXAMPLE), "-t", str(broken)]) == 2
    line = _error_line(capsys)
    assert "roofline.static_w" in line and "missing" in line and str(broken) in line


def test_unpriced_ops_are_listed(unpriced_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = load_graph(unpriced_model)
    assert not is_priced(graph.nodes[0])
    assert main(["cost", str(unpriced_model), "-t", "host-cpu,h100"]) == 0
    out = capsys.readouterr().out
    assert "host-cpu: unpriced ops (not in the totals, so the latency is a lower bound): Det ×1" in out
    # The totals say the latency is a lower bound: "≥ 2.1 µs" on both targets.
    (latency_row,) = [ln for ln in out.splitlines() if "latency" in ln and "≥" in ln]
    assert latency_row.count("≥ ") == 2
    assert main(["cost", str(unpriced_model), "-t", "host-cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["targets"]["host-cpu"]
    assert report["unpriced"] == {"Det": 1} and report["latency_is_lower_bound"] is True
    assert [n["latency_s"] for n in report["nodes"] if n["op"] == "Det"] == [None]


def test_dump_with_target_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["dump", str(EXAMPLE), "--target", "host-cpu", "--passes", "canonicalize"]
    # dot: colours and tooltips; without a target, the plain DOT is unchanged.
    assert main([*base, "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph") and "fillcolor" in dot and "tooltip" in dot and "bound compute" in dot
    assert main(["dump", str(EXAMPLE), "--format", "dot"]) == 0
    assert capsys.readouterr().out == to_dot(load_graph(EXAMPLE))
    # json: every node has its cost, and the dump still loads back.
    out = tmp_path / "g.json"
    assert main([*base, "--format", "json", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert all(n["cost"]["bound"] for n in doc["nodes"]) and doc["cost"]["target"] == "host-cpu"
    assert len(load_graph(out).nodes) == len(doc["nodes"])
    # text: cost as comment lines; with its weights it still parses.
    assert main([*base, "--weights"]) == 0
    text = capsys.readouterr().out
    assert "// cost on host-cpu" in text and len(parse_graph(text).nodes) == len(doc["nodes"])
    # html: one self-contained file.
    page = tmp_path / "g.html"
    assert main([*base, "--format", "html", "-o", str(page)]) == 0
    html = page.read_text()
    assert html.count('<g class="node') == len(doc["nodes"]) and 'id="totals"' in html
    assert not re.search(r"https?://", html)


def test_bad_output_paths_leave_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope" / "g.html"
    assert main(["dump", str(EXAMPLE), "-t", "host-cpu", "--format", "html", "-o", str(missing)]) == 2
    assert "does not exist" in _error_line(capsys)
    assert main(["cost", str(EXAMPLE), "-t", "host-cpu", "--plot", str(tmp_path / "nope" / "p.png")]) == 2
    _error_line(capsys)
    assert main(["cost", str(EXAMPLE), "-t", "host-cpu", "--plot", str(tmp_path)]) == 2
    assert "directory" in _error_line(capsys)
    assert main(["dump", str(EXAMPLE), "--format", "html", "-o", str(tmp_path / "g.html")]) == 2
    assert "--target" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_html_escapes_names(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"], name='<script>alert("x")</script>&')
    g = helper.make_graph([node], "<g>", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "weird.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    graph = load_graph(path)
    html = render_html(graph, estimate(graph, "host-cpu"))
    assert "<script" not in html and "&lt;script&gt;" in html and "<g>" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
def test_html_report_renders_in_chromium(tmp_path: Path) -> None:
    """ResNet-50 (a few hundred nodes) as the browser sees it: one SVG group per node, the
    totals and a bar per layer, and nothing fetched from the network."""
    page = tmp_path / "resnet50.html"
    assert main(["dump", str(RESNET50), "-t", "host-cpu", "-p", "canonicalize", "--format", "html",
                 "-o", str(page)]) == 0
    html = page.read_text()
    assert not re.search(r"https?://|<script|<link|\ssrc=|@import|url\(", html)
    graph = _canonical(RESNET50)
    report = estimate(graph, "host-cpu")
    assert len(graph.nodes) > 200
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'profile'}",
           "--dump-dom", page.as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert dom.count("<svg") == 1
    assert len(re.findall(r'<g class="node[ "]', dom)) == len(graph.nodes)
    assert 'id="totals"' in dom and format_seconds(report.latency_s) in dom
    assert dom.count('class="bar"') == len(report.nodes)
    assert "layer" in dom.lower() and "fits" in dom
