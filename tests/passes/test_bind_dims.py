"""bind-dims: symbolic input dims become numbers, and the types after them follow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.backends.cost import estimate
from hwnas.cli import main
from hwnas.errors import CostError, PipelineError
from hwnas.frontends.onnx import import_onnx
from hwnas.passes import parse_pipeline
from hwnas.passes.bind_dims import BindDims
from hwnas.passes.testing import build_model, fires, node_lines, numeric, randn, unchanged

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "small_cnn.onnx"


def dynamic_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return build_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        {"x": (TensorProto.FLOAT, ["N", 3, 8, 8])}, ["y"], {"w": randn(rng, 4, 3, 3, 3)})


def test_golden() -> None:
    result = fires(dynamic_model(), BindDims(value=2))
    assert result.graph.inputs[0].type.shape == (2, 3, 8, 8)
    assert node_lines(result.graph) == (
        "  %c: f32[2,4,8,8] = Conv(%x, %w) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]} @Conv_0\n"
        "  %y: f32[2,4,8,8] = Relu(%c) @Relu_1\n")


def test_numeric() -> None:
    numeric(dynamic_model(), BindDims())


def test_negative_static_inputs_stay() -> None:
    unchanged(onnx.load(EXAMPLE), BindDims())


def test_bad_value() -> None:
    with pytest.raises(PipelineError, match="value must be at least 1"):
        parse_pipeline("bind-dims{value=0}")


def test_costs_need_numbers() -> None:
    graph = import_onnx(dynamic_model())
    with pytest.raises(CostError, match="input x has symbolic dims; bind them first"):
        estimate(graph, "host-cpu")
    r = estimate(BindDims().run(graph).graph, "host-cpu")
    assert r.node(graph.nodes[0].name).macs == 8 * 8 * 4 * 27


def test_cost_cli_binds_symbolic_dims_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "dynamic.onnx"
    onnx.save(dynamic_model(), path)
    assert main(["cost", str(path), "--target", "cortex-m7", "--json"]) == 0
    captured = capsys.readouterr()
    assert "symbolic dims bound to 1: x[N, 3, 8, 8]" in captured.err
    doc = json.loads(captured.out)
    conv = doc["targets"]["cortex-m7"]["nodes"][0]
    assert conv["macs"] == 8 * 8 * 4 * 27 and conv["latency_s"] > 0


def spatial_model() -> onnx.ModelProto:
    """A fully convolutional net with a symbolic batch, height and width, and an unpadded 3x3
    conv (as MTCNN's P-Net): at 1x1 it cannot run at all."""
    rng = np.random.default_rng(1)
    return build_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
         helper.make_node("Relu", ["c"], ["y"])],
        {"x": (TensorProto.FLOAT, ["N", 3, "H", "W"])}, ["y"], {"w": randn(rng, 4, 3, 3, 3)})


def test_named_dims_get_their_sizes_and_the_rest_value() -> None:
    p = parse_pipeline('bind-dims{dims="H=12 W=10"}').passes[0]
    assert p == BindDims(dims="H=12 W=10") and parse_pipeline(p.spec()).passes[0] == p
    result = fires(spatial_model(), p)  # fires also checks a second run changes nothing
    assert result.graph.inputs[0].type.shape == (1, 3, 12, 10)
    assert result.graph.outputs[0].type.shape == (1, 4, 10, 8)
    bound = BindDims(value=2, dims="H:9,W:7").run(import_onnx(spatial_model())).graph
    assert bound.inputs[0].type.shape == (2, 3, 9, 7)
    whole = BindDims(dims="x=4x3x9x7").run(import_onnx(spatial_model())).graph  # an input's shape
    assert whole.inputs[0].type.shape == (4, 3, 9, 7) and whole.outputs[0].type.shape == (4, 4, 7, 5)


def test_wrong_dims_are_refused_in_one_line() -> None:
    with pytest.raises(PipelineError, match="'H' is not NAME=SIZE"):
        parse_pipeline('bind-dims{dims="H"}')
    with pytest.raises(PipelineError, match="W=0: a size must be at least 1"):
        parse_pipeline('bind-dims{dims="W=0"}')
    with pytest.raises(PipelineError, match=r"dims Q: no input of .* has this symbolic dim \(its inputs' symbolic "
                                            r"dims: x\[N, 3, H, W\]\)"):
        BindDims(dims="Q=3").run(import_onnx(spatial_model()))
    for dims, message in (("x=1x3x9", r"dims x=1x3x9: input 'x' has shape \[N, 3, H, W\]"),
                          ("x=1x4x9x9", r"dims x=1x4x9x9: input 'x' has shape \[N, 3, H, W\]"),
                          ("x=3", r"dims x=3: 'x' is an input; give its whole shape")):
        with pytest.raises(PipelineError, match=message):
            BindDims(dims=dims).run(import_onnx(spatial_model()))


def _err_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_dims_option_prices_measures_and_counts_at_the_given_size(tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture) -> None:
    # capfd: onnxruntime logs from C++ to file descriptor 2, which capsys does not see.
    path = tmp_path / "fcn.onnx"
    onnx.save(spatial_model(), path)
    macs = 10 * 8 * 4 * 27  # output 10x8 at H=12, W=10

    assert main(["cost", str(path), "-t", "host-cpu", "--dims", "H=12,W=10", "--json"]) == 0
    captured = capfd.readouterr()
    assert json.loads(captured.out)["targets"]["host-cpu"]["nodes"][0]["macs"] == macs
    assert "symbolic dims bound to 1: x[N, 3, 12, 10]" in captured.err  # N was not given

    assert main(["inspect", str(path), "--dims", "N=1,H=12,W=10"]) == 0
    assert f"MACs {macs:,}" in capfd.readouterr().out
    assert main(["inspect", str(path)]) == 0  # H and W as 1 make no per-sample figure: it says so
    assert "(symbolic dims as 1)" in capfd.readouterr().out

    # Measured with real onnxruntime at that size; at the default 1x1 the conv cannot run, and
    # the failure is hwnas's one line (onnxruntime's own error log stays quiet).
    assert main(["measure", str(path), "--dims", "N=1,H=12,W=10", "--repeats", "3", "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["measurements"][0]["median_s"] > 0
    assert main(["measure", str(path), "--repeats", "3"]) == 2
    err = _err_lines(capfd.readouterr().err)
    assert len(err) == 2 and "give their sizes with --dims" in err[0] and err[1].startswith("hwnas: error:")

    assert main(["cost", str(path), "-t", "host-cpu", "--dims", "Q=3"]) == 2
    assert _err_lines(capfd.readouterr().err) == [
        "hwnas: error: dims Q: no input of 'g' has this symbolic dim (its inputs' symbolic dims: x[N, 3, H, W])"]
    with pytest.raises(SystemExit) as e:
        main(["cost", str(path), "-t", "host-cpu", "--dims", "H=-1"])
    assert e.value.code == 2 and "argument --dims: H=-1: a size must be at least 1" in capfd.readouterr().err


def test_compile_prices_at_the_given_dims_and_keeps_the_artifact_dynamic(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    import onnxruntime as ort

    path, out = tmp_path / "fcn.onnx", tmp_path / "out" / "m.onnx"
    onnx.save(spatial_model(), path)
    out.parent.mkdir()
    assert main(["compile", str(path), "-t", "host-cpu", "-o", str(out), "--dims", "N=1,H=12,W=10"]) == 0
    assert "bound to 1" not in capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "m.cost.json").read_text())
    assert [n["macs"] for n in doc["nodes"] if n["op"] == "Conv"] == [10 * 8 * 4 * 27]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["N", 3, "H", "W"]
    assert sess.run(None, {"x": np.zeros((2, 3, 9, 6), np.float32)})[0].shape == (2, 4, 7, 4)


def test_pricing_a_dynamic_graph_folds_what_the_bound_dims_decide() -> None:
    """A batch-dynamic graph whose Expand takes its shape from Shape(x) (as tf2onnx and jax2tf
    write it) is priced whole when compiled or priced at bound dims: the copy that is priced
    folds the Shape and the arithmetic after it. Bound without that, the Expand's output
    shape stays unknown and it is left unpriced."""
    from hwnas.backends.cost import estimate
    from hwnas.backends.target import load_target
    from hwnas.compile import price
    from hwnas.frontends.onnx import import_onnx
    from hwnas.passes.bind_dims import bind
    from tests.passes.test_fold_constants import dynamic_expand

    target = load_target("host-cpu")
    graph = import_onnx(dynamic_expand())
    priced = price(graph, target, dims={"N": 3})
    assert not priced.report.unpriced and not priced.report.latency_is_lower_bound, priced.report.unpriced
    assert any(v.type is not None and not v.type.is_static for v in graph.inputs)  # the caller's graph stays dynamic
    plain = import_onnx(dynamic_expand())
    bind(plain, {"N": 3})
    assert "Expand" in estimate(plain, target).unpriced


def test_a_dim_with_no_name_is_given_by_the_whole_shape() -> None:
    """PP-OCR's classifier has x[?, 3, ?, ?]: naming a dim it does not have says how to size it."""
    rng = np.random.default_rng(0)
    m = build_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                    {"x": (TensorProto.FLOAT, [None, 3, None, None])}, ["y"], {"w": randn(rng, 4, 3, 3, 3)})
    with pytest.raises(PipelineError, match=r"dims N: no input of '.*' has this symbolic dim \(its inputs' symbolic "
                                            r"dims: x\[\?, 3, \?, \?\]\); a dim with no name is given with its "
                                            r"input's whole shape, as x=1x3x224x224"):
        parse_pipeline('bind-dims{dims="N=1"}').run(import_onnx(m))
    graph = parse_pipeline('bind-dims{dims="x=1x3x6x5"}').run(import_onnx(m)).graph
    assert graph.outputs[0].type.shape == (1, 4, 6, 5)
