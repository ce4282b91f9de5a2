"""quantize: bit widths and calibrated activation ranges as annotations; `hwnas opt` writes QDQ."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hwnas.backends.emit.onnx import save_onnx
from hwnas.backends.emit.qdq import activation_qparams
from hwnas.cli import main
from hwnas.errors import PipelineError
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.annotations import QuantSpec, annotation_from_dict, annotation_to_dict
from hwnas.ir.text import parse_graph, print_graph
from hwnas.passes import parse_pipeline
from hwnas.passes.quantize import Quantize, QuantizeError, Stats, choose_range, quantize_layers
from hwnas.passes.testing import build_model, fires, node_lines, numeric, randn, unchanged


def model(batch: int | str = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return build_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Flatten", ["r"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fw"], ["y"], transB=1, name="fc")],
        {"x": (TensorProto.FLOAT, [batch, 2, 4, 4])}, ["y"],
        {"w": randn(rng, 3, 2, 3, 3), "b": randn(rng, 3), "fw": randn(rng, 5, 48)})


def calib_file(path: Path, n: int = 6, **arrays: np.ndarray) -> Path:
    x = np.random.default_rng(1).uniform(-0.5, 2.0, (n, 2, 4, 4)).astype(np.float32)
    x[0, 0, 0, 0], x[1, 1, 1, 1] = -1.0, 3.0  # the range minmax must find
    np.savez(path, **(arrays or {"x": x}))
    return path


def test_golden(tmp_path: Path) -> None:
    result = fires(model(), Quantize(calib=str(calib_file(tmp_path / "c.npz")), layers="conv"))
    assert activation_qparams(-1.0, 3.0, 8) == (0.01568627543747425, 64)
    assert node_lines(result.graph) == (
        '  %c: f32[1,3,4,4] = Conv(%x, %w, %b) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]} @conv #{"quant": '
        '{"a_bits": 8, "a_scale": 0.01568627543747425, "a_zero_point": 64, "method": "minmax", '
        '"o_scale": 0.06162942945957184, "o_zero_point": 0, "symmetric": true, '
        '"w_bits": 8, "w_granularity": "per-channel"}}\n'
        "  %r: f32[1,3,4,4] = Relu(%c) @relu\n"
        "  %f: f32[1,48] = Flatten(%r) @flat\n"
        "  %y: f32[1,5] = Gemm(%f, %fw) {transB=1} @fc\n")


def test_numeric(tmp_path: Path) -> None:
    # Annotations only: the float emission is the same model (QDQ numerics: tests/backends/test_emit_qdq.py).
    numeric(model(), Quantize(w_bits=4, a_bits=6, method="mse", calib=str(calib_file(tmp_path / "c.npz"))))


def test_negative_no_constant_weight() -> None:
    m = build_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])],
                    {"x": [1, 2, 4, 4], "w": [3, 2, 1, 1]}, ["y"])
    with pytest.warns(UserWarning, match=r"layer 'Conv_0' \(Conv\) stays float: its weight \(input 1\) is a graph "
                                         "input"):
        unchanged(m, Quantize())


def test_a_model_quantized_elsewhere_says_there_is_nothing_to_quantize(tmp_path: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    src, dst = tmp_path / "float.onnx", tmp_path / "dynamic.onnx"
    onnx.save(model(), src)
    quantize_dynamic(str(src), str(dst))  # onnxruntime's own: ConvInteger, MatMulInteger
    graph = import_onnx(onnx.load(dst))
    with pytest.warns(UserWarning, match=r"quantize: nothing to quantize in graph '.*': its layers are integer "
                                         r"already \(ConvInteger ×1, MatMulInteger ×1\)"):
        assert not Quantize().run(graph).changed


def test_random_calibration_of_a_spatially_symbolic_model_says_what_to_bind() -> None:
    rng = np.random.default_rng(0)
    m = build_model([helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], name="conv"),
                     helper.make_node("Relu", ["c"], ["r"]),
                     helper.make_node("Conv", ["r", "w2"], ["y"], kernel_shape=[1, 1])],
                    {"x": (TensorProto.FLOAT, [1, 2, "H", "W"])}, ["y"],
                    {"w": randn(rng, 3, 2, 3, 3), "w2": randn(rng, 2, 3, 1, 1)})
    with pytest.warns(UserWarning, match="random normal inputs"), \
            pytest.raises(QuantizeError, match=r"cannot run it .*; its random inputs had symbolic dims as 1: "
                                               r"x\[H\], x\[W\]; give calibration data, or the dims' sizes "
                                               r"before quantizing \(--dims NAME=SIZE,\.\.\. or "
                                               r"INPUT=1x3x224x224 on the command line, bind-dims"):
        Quantize().run(import_onnx(m))
    graph = parse_pipeline('bind-dims{dims="H=6,W=6"}').run(import_onnx(m)).graph
    with pytest.warns(UserWarning, match="random normal inputs"):
        assert Quantize().run(graph).changed


def test_every_layer_by_default_and_random_data_warns() -> None:
    graph = import_onnx(model("N"))
    with pytest.warns(UserWarning, match="random normal inputs"):
        assert Quantize(w_bits=6, a_bits=16, samples=3).run(graph).changed
    specs = {n.name: n.ann.quant for n in graph.nodes}
    assert specs["relu"] is None and specs["flat"] is None
    assert specs["conv"].w_bits == 6 and specs["fc"].a_bits == 16 and specs["fc"].a_zero_point == 0  # after Relu


def test_options_are_checked() -> None:
    for spec, message in [("quantize{w_bits=9}", "w_bits must be 2..8 or 16, not 9"),
                          ("quantize{a_bits=1}", "a_bits must be 2..8 or 16, not 1"),
                          ("quantize{method=kl}", "option 'method' must be one of minmax, percentile, mse"),
                          ("quantize{percentile=0}", "percentile must be in"),
                          ("quantize{samples=-1}", r"samples must be 0 \(all\) or more")]:
        with pytest.raises(PipelineError, match=message):
            parse_pipeline(spec)
    p = parse_pipeline('quantize{w_bits=4,method=mse,layers="conv,fc"}')
    assert p.spec() == 'quantize{w_bits=4,method=mse,layers="conv,fc"}'


@pytest.mark.parametrize("layers, message", [("conv,nope", "no node named 'nope' (quantizable: conv, fc)"),
                                             ("relu", "node 'relu' (Relu) cannot be quantized: Relu is not a Conv")])
def test_bad_layers(layers: str, message: str) -> None:
    with pytest.raises(QuantizeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Quantize(layers=layers).run(import_onnx(model()))


def test_per_layer_bits_api(tmp_path: Path) -> None:
    graph = import_onnx(model())
    calib = calib_file(tmp_path / "c.npz")
    assert quantize_layers(graph, {"conv": (4, 8), "fc": (8, None)}, calib=calib)
    conv, fc = graph.node_by_name("conv").ann.quant, graph.node_by_name("fc").ann.quant
    assert (conv.w_bits, conv.a_bits, conv.a_zero_point) == (4, 8, 64)
    assert fc == QuantSpec(w_bits=8, a_bits=None)
    assert not quantize_layers(graph, {"conv": (4, 8), "fc": (8, None)}, calib=calib)  # honest `changed`
    with pytest.raises(ValueError, match="w_bits must be 2..8 or 16, not 12"):
        quantize_layers(graph, {"conv": (12, 8)}, calib=calib)


def test_calibration_methods() -> None:
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.standard_normal(100_000), [40.0, -25.0]]).astype(np.float32)  # two outliers
    st = Stats(float(v.min()), float(v.max()), [v])
    assert choose_range(st, "minmax", 8, 99.99) == (-25.0, 40.0)
    lo, hi = choose_range(st, "percentile", 8, 99.9)
    assert -3.6 < lo < -2.9 and 2.9 < hi < 3.6
    lo, hi = choose_range(st, "mse", 4, 99.99)
    assert -25.0 < lo and hi < 40.0 / 3  # clipping the outliers beats resolving them at 4 bits


def test_calibration_uses_every_sample_or_says_how_many(tmp_path: Path) -> None:
    x = np.random.default_rng(1).uniform(0.0, 1.0, (40, 2, 4, 4)).astype(np.float32)
    x[39, 0, 0, 0] = 9.0  # only the last sample reaches 9
    calib = str(calib_file(tmp_path / "c.npz", x=x))
    graph = import_onnx(model("N"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Quantize(calib=calib, layers="conv").run(graph)
    assert graph.node_by_name("conv").ann.quant.a_scale == pytest.approx(9.0 / 255)
    graph = import_onnx(model("N"))
    with pytest.warns(UserWarning, match=r"c.npz': using the first 8 of its 40 samples \(samples=8; 0 uses all\)"):
        Quantize(calib=calib, layers="conv", samples=8).run(graph)
    assert graph.node_by_name("conv").ann.quant.a_scale < 2.0 / 255
    # A static batch of 3 takes 39 of the 40: said, not silent.
    with pytest.warns(UserWarning, match="calibration uses 39 of its 40 samples: input 'x' takes batches of 3"):
        Quantize(calib=calib, layers="conv").run(import_onnx(model(3)))


def test_calibration_file_errors(tmp_path: Path) -> None:
    graph = import_onnx(model())
    x = np.zeros((4, 2, 4, 4), np.float32)
    cases = {
        "no such file": tmp_path / "none.npz",
        r"array 'x' has shape \(4, 2, 5, 4\), the input needs \(N, 2, 4, 4\)":
            calib_file(tmp_path / "shape.npz", x=np.zeros((4, 2, 5, 4), np.float32)),
        r"has no array for input 'x' \(arrays: a, b\)": calib_file(tmp_path / "names.npz", a=x, b=x),
        "cannot read as .npz": tmp_path / "text.npz",
    }
    (tmp_path / "text.npz").write_text("not an archive")
    for message, path in cases.items():
        with pytest.raises(QuantizeError, match=message):
            Quantize(calib=str(path)).run(graph)
    assert Quantize(calib=str(calib_file(tmp_path / "one.npz", images=x))).run(graph).changed  # one array: any name


def test_annotation_round_trips(tmp_path: Path) -> None:
    graph = import_onnx(model())
    Quantize(method="percentile", calib=str(calib_file(tmp_path / "c.npz"))).run(graph)
    spec = graph.node_by_name("fc").ann.quant
    assert annotation_from_dict("quant", annotation_to_dict(spec)) == spec
    assert annotation_from_dict("quant", {"w_bits": 4}) == QuantSpec(w_bits=4)  # older dumps still load
    again = parse_graph(print_graph(graph))
    assert [n.ann.quant for n in again.nodes] == [n.ann.quant for n in graph.nodes]
    assert dataclasses.replace(spec, a_scale=None) != spec


# -- the CLI -------------------------------------------------------------------------------

def _sess_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_opt_writes_qdq_with_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model(), src)
    calib = calib_file(tmp_path / "c.npz")
    # --calib-data reaches quantize passes nested in a fixpoint, and leaves one with its own calib alone.
    other = tmp_path / "other.npz"
    spec = f'canonicalize,fixpoint(quantize{{layers=conv}}),quantize{{layers=fc,calib="{other}"}}'
    assert main(["opt", str(src), "-p", spec, "-o", str(out), "--calib-data", str(calib)]) == 2
    assert "calibration data" in (err := capsys.readouterr().err) and "other.npz': no such file" in err
    assert not out.exists()
    assert main(["opt", str(src), "-p", "canonicalize,fixpoint(quantize{layers=conv})", "-o", str(out),
                 "--calib-data", str(calib)]) == 0
    assert "random" not in capsys.readouterr().err
    q = onnx.load(out)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in q.graph.node}
    x = np.load(calib)["x"][:1]
    ref = _sess_outputs(src, x)
    np.testing.assert_allclose(_sess_outputs(out, x), ref, atol=0.05 * np.abs(ref).max())


def test_opt_bad_calibration_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    save_onnx(import_onnx(model()), src)
    calib = calib_file(tmp_path / "c.npz", x=np.zeros((4, 3, 4, 4), np.float32))
    assert main(["opt", str(src), "-p", "quantize", "-o", str(out), "--calib-data", str(calib)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwnas: error: calibration data")
    assert "has shape (4, 3, 4, 4), the input needs (N, 2, 4, 4)" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "m.onnx"]  # no output, no temporary file


def test_unused_calibration_data_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model(), src)
    assert main(["opt", str(src), "-p", "dce", "-o", str(out), "--calib-data", str(tmp_path / "c.npz")]) == 0
    err = capsys.readouterr().err
    assert "warning: --calib-data" in err and "unused" in err


def test_a_model_onnxruntime_cannot_run_for_calibration_fails_in_one_line(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # A ConstantOfShape of 2^42 floats (a fuzzed shape): onnxruntime cannot allocate it.
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="big"),
             helper.make_node("ReduceSum", ["big"], ["s"], name="sum", keepdims=0),
             helper.make_node("Add", ["x", "s"], ["xs"], name="add"),
             helper.make_node("Conv", ["xs", "w"], ["y"], name="conv")]
    model = build_model(nodes, {"x": [1, 3, 8, 8]}, ["y"],
                        {"w": randn(rng, 4, 3, 3, 3), "big_shape": np.array([1 << 21, 1 << 21], np.int64)})
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, src)
    assert main(["opt", str(src), "-p", "quantize", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hwnas: error: quantize: graph") and "onnxruntime cannot" in err[-1]
    assert not any("internal error" in ln for ln in err) and not out.exists()
