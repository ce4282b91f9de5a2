"""map-analog: weight layers on crossbar tiles, counted by hand; split over tiles; block-diagonal
depthwise; digital layers with their reason; the analog cost model reads the placements."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from hwnas.backends.cost import estimate
from hwnas.backends.target import TARGETS_DIR
from hwnas.errors import PipelineError
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.text import parse_graph, print_graph
from hwnas.passes import parse_pipeline
from hwnas.passes.map_analog import MapAnalog
from hwnas.passes.testing import SEED, build_model, fires, numeric, randn


def small_cnn() -> onnx.ModelProto:
    """conv1 9x8, conv2 72x40, depthwise 40 x (9x1), gemm 40x10, and a MatMul by a run-time matrix."""
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"], name="relu1"),
             helper.make_node("Conv", ["ar", "w2", "b2"], ["b"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "w3"], ["c"], name="dw", group=40, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w4", "b4"], ["y"], name="gemm", transB=1),
             helper.make_node("MatMul", ["y", "m"], ["z"], name="mm")]
    weights = {"w1": randn(rng, 8, 1, 3, 3), "w2": randn(rng, 40, 8, 3, 3), "b2": randn(rng, 40),
               "w3": randn(rng, 40, 1, 3, 3), "w4": randn(rng, 10, 40), "b4": randn(rng, 10)}
    return build_model(nodes, {"x": [1, 1, 8, 8], "m": [10, 10]}, ["z"], weights)


def run(p: MapAnalog, model: onnx.ModelProto | None = None) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fires(model or small_cnn(), p)
    return result.graph, [str(w.message) for w in caught]


def test_tiles_by_hand() -> None:
    graph, messages = run(MapAnalog(tile_rows=32, tile_cols=32))
    nodes = {n.name: n for n in graph.nodes}  # type: ignore[attr-defined]
    conv1, conv2, dw, gemm, mm = (nodes[k].ann.placement for k in ("conv1", "conv2", "dw", "gemm", "mm"))
    # conv1: 1*3*3 = 9 rows x 8 columns: one tile, its corner.
    assert conv1.analog and conv1.tile_ids == (0,) and conv1.blocks == ((0, 0, 9, 0, 8, 0, 0),)
    # conv2: 72 rows x 40 columns: ceil(72/32) = 3 row tiles x 2 column tiles = tiles 1..6.
    assert conv2.tile_ids == tuple(range(1, 7)) and conv2.tiles == 6
    assert conv2.blocks[:3] == ((1, 0, 32, 0, 32, 0, 0), (2, 0, 32, 32, 40, 0, 0), (3, 32, 64, 0, 32, 0, 0))
    assert conv2.blocks[-1] == (6, 64, 72, 32, 40, 0, 0)
    # depthwise: 40 groups of 9x1, min(32 // 9, 32 // 1) = 3 a tile, block-diagonal: ceil(40/3) = 14 tiles.
    assert dw.tile_ids == tuple(range(7, 21))
    assert dw.blocks[:4] == ((7, 0, 9, 0, 1, 0, 0), (7, 9, 18, 1, 2, 9, 1), (7, 18, 27, 2, 3, 18, 2),
                             (8, 27, 36, 3, 4, 0, 0))
    # gemm (transB): 40 rows x 10 columns: 2 row tiles, partial sums added digitally.
    assert gemm.tile_ids == (21, 22) and gemm.blocks == ((21, 0, 32, 0, 10, 0, 0), (22, 32, 40, 0, 10, 0, 0))
    assert not mm.analog and mm.reason == "its weights are computed at run time (not a constant)"
    assert messages == ["map-analog: 4 of 5 weight layers on 23 of 64 32x32 tiles; digital: 'mm' (MatMul): "
                        "its weights are computed at run time (not a constant)"]


def test_numeric_exact() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        numeric(small_cnn(), MapAnalog(tile_rows=32, tile_cols=32))  # annotations only: outputs unchanged


def test_placements_print_and_parse_back() -> None:
    graph, _ = run(MapAnalog(tile_rows=32, tile_cols=32))
    text = print_graph(graph)  # type: ignore[arg-type]
    assert "tile_ids" in text
    again = parse_graph(text)
    assert [n.ann.placement for n in again.nodes] == [n.ann.placement for n in graph.nodes]  # type: ignore[attr-defined]


def test_defaults_come_from_the_target_and_spec_round_trips() -> None:
    p = parse_pipeline("map-analog{tile_rows=64,fill=budget}").passes[0]
    assert p.spec() == "map-analog{tile_rows=64,fill=budget}"
    hw = MapAnalog().hardware()
    assert (hw.tile_rows, hw.tile_cols, hw.tiles) == (256, 256, 64)  # analog-pcm.toml
    graph, _ = run(MapAnalog())
    conv2 = next(n for n in graph.nodes if n.name == "conv2").ann.placement  # type: ignore[attr-defined]
    assert conv2.tiles == 1 and conv2.tile_rows == 256


def test_cost_model_reads_the_placements() -> None:
    graph, _ = run(MapAnalog(tile_rows=32, tile_cols=32))
    r = estimate(graph, "analog-pcm")  # type: ignore[arg-type]
    conv2 = r.node("conv2")
    assert conv2.resources["tiles"] == 6 and conv2.resources["row_tiles"] == 3
    assert "tiles 1-6" in conv2.note
    # 8x8 output pixels, one MVM each; each of 3 row tiles converts its 40 columns: 64 * 40 * 3 ADC conversions.
    assert conv2.resources["adc_conversions"] == 64 * 40 * 3
    # Inputs: 72 rows to each of 2 column tiles, 1 byte; outputs: 40 columns from each of 3 row tiles, 1 byte.
    assert conv2.resources["transfer_bytes"] == 64 * (72 * 2 + 40 * 3)
    assert r.resources["tiles"].used == 23 and r.fits
    assert r.node("mm").note.startswith("digital core")
    # The same graph unplaced sits on 256x256 tiles: one per layer, the depthwise 256 // 9 = 28 a tile on 2.
    unplaced = estimate(import_onnx(small_cnn()), "analog-pcm")
    assert unplaced.resources["tiles"].used == 5


def edited_target(tmp_path: Path, tiles: int) -> str:
    text = (TARGETS_DIR / "analog-pcm.toml").read_text().replace("tiles = 64", f"tiles = {tiles}")
    path = tmp_path / "few.toml"
    path.write_text(text)
    return str(path)


def test_too_few_tiles(tmp_path: Path) -> None:
    few = edited_target(tmp_path, 22)
    graph, _ = run(MapAnalog(target=few, tile_rows=32, tile_cols=32))
    r = estimate(graph, few)  # type: ignore[arg-type]
    assert r.resources["tiles"].used == 23 and r.resources["tiles"].available == 22 and not r.fits
    budget, messages = run(MapAnalog(target=few, tile_rows=32, tile_cols=32, fill="budget"))
    gemm = next(n for n in budget.nodes if n.name == "gemm").ann.placement  # type: ignore[attr-defined]
    assert not gemm.analog and gemm.reason == "the chip's 22 tiles are spent (21 used, it needs 2)"
    assert estimate(budget, few).fits  # type: ignore[arg-type]
    assert "3 of 5 weight layers on 21 of 22 32x32 tiles" in messages[0]
    # conv2 alone needs 6 tiles: on a 5-tile chip it stays digital, the others are placed.
    graph5, messages = run(MapAnalog(tile_rows=32, tile_cols=32, tiles=5))
    conv2 = next(n for n in graph5.nodes if n.name == "conv2").ann.placement  # type: ignore[attr-defined]
    assert conv2.reason == "needs 6 tiles of 32x32, the chip has 5"


def test_no_layer_fits_is_one_line() -> None:
    with pytest.raises(PipelineError, match=r"^map-analog: no layer of graph 'g' fits 1 tiles of 4x4 "
                                            r"\(the smallest needs 6\)$"):
        MapAnalog(tile_rows=4, tile_cols=4, tiles=1).run(import_onnx(small_cnn()))
    with pytest.raises(ValueError, match="tile_rows must be positive"):
        MapAnalog(tile_rows=-1)


def test_unchanged_on_a_graph_without_weight_layers() -> None:
    model = build_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {"x": [1, 4]}, ["y"])
    graph = import_onnx(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to report: no warning
        assert MapAnalog().run(graph).changed is False


def test_html_page_shows_the_placement(tmp_path: Path) -> None:
    from hwnas.backends.render.html import render_html

    graph, _ = run(MapAnalog(target=edited_target(tmp_path, 22), tile_rows=32, tile_cols=32))
    page = render_html(graph, estimate(graph, edited_target(tmp_path, 22)))  # type: ignore[arg-type]
    assert "<h2>Crossbar placement</h2>" in page and "beyond the chip's 22" in page
    assert page.count("<title>tile ") == 23 and page.count('stroke="#b00020"') == 1  # tile 22 is past the chip
    assert "<title>tile 1: conv2, 100% of its cells</title>" in page
    assert "6 tiles of 32×32: 1, 2, 3, 4, 5, 6; matrix 72 × 40 in 6 blocks" in page
    assert "digital: its weights are computed at run time (not a constant)" in page
    unplaced = import_onnx(small_cnn())
    assert "No layer carries a placement: run the pass map-analog" in render_html(unplaced,
                                                                                 estimate(unplaced, "analog-pcm"))
    assert "Crossbar placement" not in render_html(unplaced, estimate(unplaced, "host-cpu"))


def test_a_recurrent_layer_gets_tiles_for_w_and_r_as_the_cost_model_counts_them() -> None:
    """A bidirectional LSTM (input 40, hidden 20: gate rows 80) on 32x32 tiles: W is 40 rows x 80
    columns, 2 x 3 tiles per direction; R is 20 x 80, 1 x 3 per direction: 18 tiles in all, R's
    after W's."""
    graph, messages = run(MapAnalog(tile_rows=32, tile_cols=32), lstm_model())
    lstm = graph.node_by_name("lstm").ann.placement  # type: ignore[attr-defined]
    assert lstm.analog and lstm.tile_ids == tuple(range(18))
    w_blocks, r_blocks = lstm.blocks[:12], lstm.blocks[12:]
    assert w_blocks[:3] == ((0, 0, 32, 0, 32, 0, 0), (1, 0, 32, 32, 64, 0, 0), (2, 0, 32, 64, 80, 0, 0))
    assert w_blocks[6][:5] == (6, 40, 72, 80, 112)  # the second direction's W, block-diagonal
    assert r_blocks[0] == (12, 80, 100, 160, 192, 0, 0) and r_blocks[-1][:5] == (17, 100, 120, 304, 320)
    report = estimate(graph, "analog-pcm")  # type: ignore[arg-type]
    assert report.node("lstm").resources["tiles"] == 18 and "W 12, R 6" in report.node("lstm").note
    assert report.resources["tiles"].used == 18 + graph.node_by_name("fc").ann.placement.tiles  # type: ignore[attr-defined]
    assert messages[0].startswith("map-analog: 2 of 2 weight layers on")


def lstm_model() -> onnx.ModelProto:
    """A bidirectional LSTM (6 steps, input 40, hidden 20) with initial states as inputs, then a Gemm."""
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("LSTM", ["x", "w", "r", "b", "", "h0", "c0"], ["y"], name="lstm", hidden_size=20,
                              direction="bidirectional"),
             helper.make_node("Flatten", ["y"], ["f"], name="flat", axis=0),
             helper.make_node("Gemm", ["f", "g"], ["z"], name="fc", transB=1)]
    weights = {"w": randn(rng, 2, 80, 40) * 0.3, "r": randn(rng, 2, 80, 20) * 0.3, "b": randn(rng, 2, 160) * 0.1,
               "g": randn(rng, 10, 6 * 2 * 20) * 0.2}
    return build_model(nodes, {"x": [6, 1, 40], "h0": [2, 1, 20], "c0": [2, 1, 20]}, ["z"], weights)
