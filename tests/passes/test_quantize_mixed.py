"""Mixed-precision allocation: Hutchinson's trace against the exact Hessian, the MILP
against exhaustive search, greedy as the weaker baseline, and the pass end to end on the
digits CNN (real data) with its QDQ model run in onnxruntime."""

from __future__ import annotations

import copy
import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.backends.emit.qdq import to_qdq_onnx
from hwnas.errors import PipelineError
from hwnas.passes import parse_pipeline
from hwnas.passes.quantize import quantizable
from hwnas.passes.quantize_mixed import QuantizeMixed, allocate, greedy, layer_costs
from hwnas.passes.sensitivity import hessian_traces, sensitivities
from hwnas.tasks import Task, load_task
from hwnas.tasks.evaluate import evaluate
from tests.backends.graphs import Builder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits() -> Task:
    return load_task("digits-cnn")


def test_hutchinson_trace_matches_the_exact_hessian() -> None:
    b = Builder((16, 6))
    h = b.op("Tanh", b.gemm(b.x, 5, name="fc1"))
    b.g.outputs.append(b.gemm(h, 3, name="fc2"))
    x = np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32)
    labels = np.arange(16) % 3
    nodes = [b.g.node_by_name("fc1"), b.g.node_by_name("fc2")]
    iterations = 400
    est = hessian_traces(b.g, nodes, x, labels, iterations=iterations)
    w1 = torch.from_numpy(nodes[0].input(1).const.copy())
    w2 = torch.from_numpy(nodes[1].input(1).const.copy())
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)

    def loss(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(torch.tanh(xt @ a.T) @ c.T, yt)

    hess = torch.autograd.functional.hessian(loss, (w1, w2))
    for i, (name, w) in enumerate((("fc1", w1), ("fc2", w2))):
        block = hess[i][i].reshape(w.numel(), w.numel()).double()
        exact = float(torch.diagonal(block).sum())
        # Hutchinson's variance with Rademacher vectors: 2 Σ_{i≠j} H_ij² per sample.
        off = float((block**2).sum() - (torch.diagonal(block) ** 2).sum())
        assert abs(est[name] - exact) <= 4 * (2 * off / iterations) ** 0.5, (name, est[name], exact)


@pytest.fixture(scope="module")
def tables(digits: Task) -> tuple[dict, dict]:
    nodes = [n for n in digits.graph.nodes if quantizable(n)]
    sens = sensitivities(digits.graph, nodes, (2, 4, 8), digits.train[0][:64], "hessian", digits.train[1][:64])
    costs = layer_costs(digits.graph, nodes, (2, 4, 8), "size")
    return sens, costs


@pytest.mark.parametrize("share", [0.3, 0.45, 0.6, 0.8])
def test_milp_is_optimal_and_greedy_is_not_better(tables: tuple[dict, dict], share: float) -> None:
    sens, costs = tables
    layers = list(sens)
    budget = share * sum(costs[n][8] for n in layers)
    best = min((sum(sens[n][b] for n, b in zip(layers, combo, strict=True)), combo)
               for combo in itertools.product((2, 4, 8), repeat=len(layers))
               if sum(costs[n][b] for n, b in zip(layers, combo, strict=True)) <= budget)
    exact = allocate(sens, costs, budget)
    assert exact.cost <= budget + 1e-9
    assert exact.sensitivity == pytest.approx(best[0], rel=1e-9)
    g = greedy(sens, costs, budget)
    assert g.cost <= budget + 1e-9 and g.sensitivity >= exact.sensitivity - 1e-15


def test_perturbation_sensitivity_grows_as_bits_shrink(digits: Task) -> None:
    nodes = [n for n in digits.graph.nodes if quantizable(n)]
    sens = sensitivities(digits.graph, nodes, (2, 4, 8), digits.train[0][:32], "perturbation")
    for row in sens.values():
        assert row[2] > row[4] > row[8] > 0


def test_pass_annotates_within_budget_and_runs_in_onnxruntime(digits: Task, tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=digits.train[0][:64])
    graph = copy.deepcopy(digits.graph)
    p = QuantizeMixed(budget=0.4, bits="2,4,8", calib=str(calib), samples=64)
    summary = p.allocate(copy.deepcopy(graph)).summary()
    with pytest.warns(UserWarning) as record:
        out = p.run(graph).graph
    assert f"quantize-mixed: {summary}" in [str(w.message) for w in record]
    assert summary.startswith("weight bits of 6 layers (") and "; size " in summary and " of a budget of " in summary
    quant = {n.name: n.ann.quant for n in out.nodes if n.ann.quant is not None and n.ann.quant.w_bits}
    assert set(quant) == {n.name for n in out.nodes if quantizable(n)}
    assert any(n.op == "Add" and n.ann.quant is not None for n in out.nodes), "the residual Add gets a grid"
    assert {q.w_bits for q in quant.values()} <= {2, 4, 8} and len({q.w_bits for q in quant.values()}) > 1
    assert all(q.a_bits == 8 and q.a_scale is not None for q in quant.values())
    size = sum(n.input(1).const.size * n.ann.quant.w_bits for n in out.nodes if n.name in quant)
    full = sum(n.input(1).const.size * 8 for n in out.nodes if n.name in quant)
    assert size <= 0.4 * full
    for n, q in quant.items():
        assert f"{n}={q.w_bits}" in summary
    assert f"{size / 8 / 1024:.4g} KiB of a budget of {0.4 * full / 8 / 1024:.4g} KiB" in summary
    assert evaluate(to_qdq_onnx(out), digits) > 0.9


@pytest.mark.parametrize("spec, message", [
    ('quantize-mixed{bits="4,16",target=host-cpu}', "target 'host-cpu' cannot run 16-bit integers"),
    ("quantize-mixed{budget=1.5}", "budget must be in (0, 1]"),
    ('quantize-mixed{bits="4,9"}', "9"),
    ("quantize-mixed{metric=latency}", "needs target=NAME"),
])
def test_bad_options_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(PipelineError) as e:
        parse_pipeline(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_budget_nothing_fits_is_refused(digits: Task) -> None:
    with pytest.raises(PipelineError, match=r"no allocation fits the budget \(0.1 of [0-9.]+ KiB\); the narrowest "
                                            r"widths everywhere cost [0-9.]+ KiB, 50.0% of it"), \
            pytest.warns(UserWarning, match="sensitivities come from random normal inputs"):
        parse_pipeline('quantize-mixed{budget=0.1,bits="4,8",sensitivity=perturbation}').run(
            copy.deepcopy(digits.graph))


def test_a_flat_latency_target_says_so(digits: Task) -> None:
    # cortex-m7 runs every width up to 8 bits on its int8 datapath: narrower weights save no time.
    with pytest.raises(PipelineError, match=r"target 'cortex-m7' runs every weight width in 2,4,8 at the same latency "
                                            r"\(the narrowest everywhere saves 0.00%\)"), \
            pytest.warns(UserWarning, match="random normal inputs"):
        parse_pipeline('quantize-mixed{budget=0.5,bits="2,4,8",metric=latency,target=cortex-m7}').run(
            copy.deepcopy(digits.graph))


def test_hessian_uses_the_calibration_labels(digits: Task, tmp_path: Path) -> None:
    # Test samples 160..191 hold two the model gets wrong: its own predictions are not the labels.
    x, y = digits.test[0][160:192], digits.test[1][160:192]
    np.savez(tmp_path / "labelled.npz", input=x, labels=y)
    np.savez(tmp_path / "plain.npz", input=x)

    def mixed(name: str) -> QuantizeMixed:
        return QuantizeMixed(bits="2,8", sensitivity="hessian", calib=str(tmp_path / name))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        given = mixed("labelled.npz").allocate(digits.graph)
    # No word about the model's own predictions (a negative trace may be reported: the digits
    # model is trained on the machine at hand, and its curvature differs between CPUs).
    assert not [w for w in caught if "own predictions" in str(w.message)]
    assert given == mixed("plain.npz").allocate(digits.graph, x, y)
    with pytest.warns(UserWarning, match="use the model's own predictions as labels"):
        own = mixed("plain.npz").allocate(digits.graph)
    assert own.sensitivity != given.sensitivity
    np.savez(tmp_path / "bad.npz", input=x, labels=y[:5])
    with pytest.raises(PipelineError, match="array 'labels' must hold one integer class per sample"):
        mixed("bad.npz").allocate(digits.graph)


def test_a_negative_trace_is_not_insensitive() -> None:
    rng = np.random.default_rng(8)
    b = Builder((16, 6))
    h = b.op("Tanh", b.gemm(b.x, 5, name="fc1"))
    b.g.outputs.append(b.gemm(h, 3, name="fc2"))
    nodes = [b.g.node_by_name("fc1"), b.g.node_by_name("fc2")]
    for n in nodes:
        w = n.input(1)
        w.const = rng.standard_normal(w.const.shape).astype(np.float32)
    x = rng.standard_normal((16, 6)).astype(np.float32) * 3
    labels = rng.integers(0, 3, 16)
    trace = hessian_traces(b.g, nodes, x, labels)["fc1"]
    assert trace < 0  # saturated tanh units: the loss curves down along fc1
    with pytest.warns(UserWarning, match=f"layer 'fc1' has a negative Hessian trace estimate \\({trace:.3g}\\)"):
        sens = sensitivities(b.g, nodes, (2, 8), x, "hessian", labels)
    assert sens["fc1"][2] > sens["fc1"][8] > 0


def test_perturbation_in_onnxruntime_agrees_with_torch_and_takes_what_torch_cannot(digits: Task) -> None:
    from hwnas.errors import UnsupportedModelError
    from hwnas.passes.sensitivity import _perturbation_onnxruntime

    graph = digits.graph
    nodes = [n for n in graph.nodes if quantizable(n)]
    x = digits.train[0][:16]
    by_torch = sensitivities(graph, nodes, [3, 8], x, "perturbation")
    by_ort = _perturbation_onnxruntime(copy.deepcopy(graph), nodes, [3, 8], x, "minmax")
    for n in nodes:
        for b in (3, 8):
            assert by_ort[n.name][b] == pytest.approx(by_torch[n.name][b], rel=1e-3, abs=1e-9), (n.name, b)
    # A Shrink, which the torch emission does not take: perturbation falls back, with a warning;
    # the Hessian needs autograd, and says what to use instead.
    b = Builder((4, 3, 6, 6))
    g = b.done(b.op("Shrink", b.conv(b.x, 4, name="conv"), name="shrink"))
    xs = np.random.default_rng(0).standard_normal((4, 3, 6, 6)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"node 'shrink' \(Shrink\): no PyTorch emission .*measured in onnxruntime"):
        sens = sensitivities(g, [g.node_by_name("conv")], [2, 8], xs, "perturbation")
    assert sens["conv"][2] > sens["conv"][8] > 0
    with pytest.raises(UnsupportedModelError, match="sensitivity=hessian differentiates the PyTorch emission"):
        sensitivities(g, [g.node_by_name("conv")], [2, 8], xs, "hessian", labels=np.zeros(4, np.int64))


def test_a_model_with_several_outputs_is_perturbed_on_all_of_them() -> None:
    """A detector's two heads (MTCNN's boxes and scores): the perturbation summed over both
    outputs (torch and onnxruntime agree); it crashed on the torch emission's tuple before. The
    Hessian, which needs one output of class scores, says so."""
    from hwnas.errors import UnsupportedModelError
    from hwnas.passes.sensitivity import _perturbation_onnxruntime

    rng = np.random.default_rng(3)
    b = Builder((8, 6))
    h = b.op("Relu", b.gemm(b.x, 5, name="trunk"))
    b.g.outputs += [b.gemm(h, 4, name="boxes"), b.gemm(h, 2, name="scores")]
    for n in b.g.nodes:
        if n.op == "Gemm":
            n.input(1).const = rng.standard_normal(n.input(1).const.shape).astype(np.float32)
    nodes = [b.g.node_by_name(name) for name in ("trunk", "boxes", "scores")]
    x = rng.standard_normal((8, 6)).astype(np.float32)
    by_torch = sensitivities(b.g, nodes, (2, 8), x, "perturbation")
    by_ort = _perturbation_onnxruntime(copy.deepcopy(b.g), nodes, (2, 8), x, "minmax")
    for n in nodes:
        assert by_torch[n.name][2] > by_torch[n.name][8] > 0
        for bits in (2, 8):
            assert by_ort[n.name][bits] == pytest.approx(by_torch[n.name][bits], rel=1e-3), (n.name, bits)
    with pytest.raises(UnsupportedModelError, match="has 2 outputs: sensitivity=hessian"):
        sensitivities(b.g, nodes, (2, 8), x, "hessian", labels=np.zeros(8, np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random calibration, the allocation summary
        graph = parse_pipeline("quantize-mixed").run(b.g).graph
    assert all(n.ann.quant is not None for n in graph.nodes if n.op == "Gemm")


def test_random_inputs_of_a_spatially_symbolic_model_say_what_to_bind() -> None:
    """PP-OCR's recognizer (height and width symbolic) crashed in torch's pooling on random
    inputs whose symbolic dims were all the sample count; they are now sized as quantize sizes
    them (1, or as bound), and a model that cannot run on them says which dims to give."""
    from onnx import TensorProto, helper

    from hwnas.frontends.onnx import import_onnx
    from hwnas.passes.quantize import QuantizeError
    from hwnas.passes.testing import build_model, randn

    rng = np.random.default_rng(0)
    m = build_model([helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], name="conv"),
                     helper.make_node("Relu", ["c"], ["r"]),
                     helper.make_node("Conv", ["r", "w2"], ["y"], kernel_shape=[3, 3], name="conv2")],
                    {"x": (TensorProto.FLOAT, ["N", 2, "H", "W"])}, ["y"],
                    {"w": randn(rng, 3, 2, 3, 3), "w2": randn(rng, 2, 3, 3, 3)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random calibration
        with pytest.raises(QuantizeError, match=r"quantize-mixed: graph '.*' cannot run on its calibration inputs "
                                                r"\(.*\); its random inputs had symbolic dims as 1: x\[H\], x\[W\]; "
                                                r"give calibration data, or the dims' sizes"):
            parse_pipeline("quantize-mixed").run(import_onnx(m))
        graph = parse_pipeline('bind-dims{dims="H=8,W=8"},quantize-mixed').run(import_onnx(m)).graph
    assert all(n.ann.quant is not None for n in graph.nodes if n.op == "Conv")
