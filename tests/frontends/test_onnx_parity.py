"""ONNX in, ONNX out: import -> to_onnx -> onnx.checker -> onnxruntime computes what the
original computes, on the model-zoo light models and on onnx's ~1,900 node test cases."""

from __future__ import annotations

import collections
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from hwnas.backends.emit.onnx import save_onnx, to_onnx
from hwnas.errors import HwnasError
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.registry import registered_ops

SESSION_OPTIONS = ort.SessionOptions()
SESSION_OPTIONS.log_severity_level = 4  # onnxruntime's warnings would drown the test output
SESSION_OPTIONS.intra_op_num_threads = 1  # tiny models: threads cost more than they save

PASS = "pass"
REFUSED = "refused by hwnas"
ORT_CANNOT_RUN = "onnxruntime cannot run the original"
ORT_DISAGREES = "onnxruntime disagrees with the reference on the original"
FAIL = "fail"


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), SESSION_OPTIONS, providers=["CPUExecutionProvider"])


def as_array(x: object) -> object:
    """Test data as onnxruntime takes it: arrays, lists of arrays (sequences), or None."""
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, list):
        return [as_array(y) for y in x]
    return None if x is None else np.asarray(x)


def run(model: onnx.ModelProto, inputs: list) -> list:
    sess = session(model)
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    return sess.run(None, {n: as_array(x) for n, x in zip(names, inputs, strict=False)})


def mismatch(got: list, expected: list, rtol: float, atol: float) -> str | None:
    """Why `got` differs from `expected`, or None when every output agrees."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        e = as_array(e)
        if isinstance(e, list) or isinstance(g, list):
            if not (isinstance(e, list) and isinstance(g, list)):
                return f"output {k}: sequence against tensor"
            why = mismatch(g, e, rtol, atol)
            if why:
                return f"output {k}: {why}"
            continue
        if e is None or g is None:
            if e is not g:
                return f"output {k}: optional presence differs"
            continue
        g = np.asarray(g)
        if g.dtype != e.dtype and g.dtype == np.uint8 and e.dtype.itemsize == 1:
            g = g.view(e.dtype)  # onnxruntime hands 8-bit floats back as their raw bytes
        if g.shape != e.shape or g.dtype != e.dtype:
            return f"output {k}: {g.dtype}{list(g.shape)}, expected {e.dtype}{list(e.shape)}"
        if e.dtype == object or e.dtype.kind in "USb":
            if not np.array_equal(g, e):
                return f"output {k}: values differ"
        elif e.dtype.kind in "iu":
            if not np.array_equal(g, e):
                return f"output {k}: values differ"
        elif not np.allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True):
            err = np.nanmax(np.abs(g.astype(np.float64) - e.astype(np.float64)))
            return f"output {k}: values differ (max abs error {err:.3g})"
    return None


def qualified_ops(model: onnx.ModelProto) -> set[str]:
    return {f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node}


# -- the light models ----------------------------------------------------------------------


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The light model with real weights: its ConstantOfShape-built float tensors (constant
    fills, which make the outputs constants too) replaced by random initializers of the same
    shape: weights scaled as He initialization so activations keep their size through the
    layers; vectors (biases, BatchNormalization's statistics: a variance must be positive, and
    a scale near 0 would make later layers ignore the input) from [0.5, 1.5]. The final
    Softmax is dropped."""
    rng = np.random.default_rng(seed)
    model = copy.deepcopy(model)
    g = model.graph
    def draw(shape: tuple[int, ...]) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
        w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in) if fan_in else rng.uniform(0.5, 1.5, shape)
        return w.astype(np.float32)

    arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    # Float initializers too: some light models keep BatchNormalization's vectors as constant fills.
    for t in g.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and arrays[t.name].size > 1:
            t.CopyFrom(numpy_helper.from_array(draw(arrays[t.name].shape), t.name))
    kept = []
    for n in g.node:
        value = next((a.t for a in n.attribute if a.name == "value"), None)
        is_float = value is None or value.data_type == onnx.TensorProto.FLOAT
        if n.op_type == "ConstantOfShape" and n.input[0] in arrays and is_float:
            shape = tuple(int(d) for d in arrays[n.input[0]])
            g.initializer.append(numpy_helper.from_array(draw(shape), n.output[0]))
            # These files are IR version 3, where every initializer is also a graph input.
            g.input.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, shape))
        else:
            kept.append(n)
    # The logits are compared, not their softmax: that of random logits saturates to one-hot.
    last = kept[-1]
    if last.op_type == "Softmax" and last.output[0] == g.output[0].name:
        kept.pop()
        g.output[0].name = last.input[0]
    del g.node[:]
    g.node.extend(kept)
    return model


def test_light_model_parity(light_model: str, tmp_path: Path) -> None:
    original = with_random_weights(onnx.load(light_model))
    source = tmp_path / "random.onnx"
    onnx.save(original, source)
    graph = import_onnx(source)
    emitted = to_onnx(graph)
    onnx.checker.check_model(emitted, full_check=True)
    assert emitted.opset_import[0].version >= 17  # brought up from opset 9

    rng = np.random.default_rng(0)
    x, x2 = (rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(2))
    (want,) = run(original, [x])
    (want2,) = run(original, [x2])
    # The outputs depend on the inputs, ten times more than the comparison below allows: a
    # wrong computation cannot hide in it.
    rtol, atol = 1e-4, 1e-5
    assert np.isfinite(want).all()
    assert np.abs(want - want2).max() > 10 * (atol + rtol * np.abs(want).max())
    (got,) = run(emitted, [x])
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)

    # save_onnx writes the same model, and the file loads and runs.
    path = tmp_path / "emitted.onnx"
    save_onnx(graph, path)
    (from_file,) = run(onnx.load(str(path)), [x])
    np.testing.assert_array_equal(from_file, got)


# -- the node test sweep -------------------------------------------------------------------


def categorize(item, registered: set[str]) -> tuple[str, str, bool]:
    """(category, detail, eligible): eligible when every op is registered and onnxruntime
    runs the original model correctly."""
    case = item.case
    rtol, atol = max(case.rtol, 1e-4), max(case.atol, 1e-5)
    original_ok, detail = True, ""
    try:
        for inputs, expected in case.data_sets:
            why = mismatch(run(case.model, inputs), expected, rtol, atol)
            if why:
                original_ok, detail = False, why
                break
        original = None if original_ok else ORT_DISAGREES
    except Exception as e:  # onnxruntime lacks a kernel, or cannot take or give the data type
        original, detail = ORT_CANNOT_RUN, str(e).strip().splitlines()[0][:200] if str(e).strip() else repr(e)
    eligible = original is None and qualified_ops(case.model) <= registered

    if item.error is not None:
        if isinstance(item.error, HwnasError):
            return REFUSED, str(item.error), eligible
        return FAIL, f"import crashed: {type(item.error).__name__}: {item.error}", eligible
    if original is not None:
        return original, detail, eligible
    try:
        emitted = to_onnx(item.graph)
        onnx.checker.check_model(emitted)
        for inputs, expected in case.data_sets:
            why = mismatch(run(emitted, inputs), expected, rtol, atol)
            if why:
                return FAIL, why, eligible
    except Exception as e:
        return FAIL, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}", eligible
    return PASS, "", eligible


def test_node_test_sweep(imported_cases: tuple, record_property: Callable[[str, object], None]) -> None:
    start = time.perf_counter()
    registered = registered_ops()
    counts: collections.Counter[str] = collections.Counter()
    eligible_counts: collections.Counter[str] = collections.Counter()
    failures, refused_eligible = [], []
    for item in imported_cases:
        category, detail, eligible = categorize(item, registered)
        counts[category] += 1
        if eligible:
            eligible_counts[category] += 1
            if category == REFUSED:
                refused_eligible.append(f"{item.case.name}: {detail}")
        if category == FAIL:
            failures.append(f"{item.case.name}: {detail}")
    elapsed = time.perf_counter() - start

    total = sum(counts.values())
    eligible_total = sum(eligible_counts.values())
    rows = [
        f"ONNX node-test sweep: import -> to_onnx -> onnx.checker -> onnxruntime ({elapsed:.1f} s)",
        f"  {'category':<60} {'cases':>6} {'eligible':>9}",
    ]
    for category in (PASS, REFUSED, ORT_CANNOT_RUN, ORT_DISAGREES, FAIL):
        rows.append(f"  {category:<60} {counts[category]:>6} {eligible_counts[category]:>9}")
    rows.append(f"  {'total':<60} {total:>6} {eligible_total:>9}")
    rows.append("  (eligible: every op in registered_ops() and onnxruntime runs the original correctly)")
    table = "\n".join(rows)
    record_property("summary", table)  # tests/conftest.py prints it at the end of the run, also under xdist

    assert total == len(imported_cases) > 1800
    assert not failures, f"{len(failures)} node tests fail:\n" + "\n".join(failures)
    assert eligible_total > 1000
    share = eligible_counts[PASS] / eligible_total
    assert share >= 0.9, f"only {share:.1%} of eligible cases pass; refused: " + "\n".join(refused_eligible)


def test_sweep_categories_on_known_cases(imported_cases: tuple) -> None:
    """A few cases whose category is known, so the sweep cannot pass by sorting wrongly."""
    by_name = {item.case.name: item for item in imported_cases}
    registered = registered_ops()
    expected = {
        "test_relu": PASS,
        "test_conv_with_strides_padding": PASS,
        "test_matmul_4d": PASS,
        "test_softmax_axis_1": PASS,
        "test_einsum_batch_matmul": PASS,  # unpriced ops still round-trip
        "test_if": REFUSED,  # control flow: a subgraph attribute
        "test_loop11": REFUSED,
        "test_split_to_sequence_1": REFUSED,  # a sequence output
    }
    for name, category in expected.items():
        assert name in by_name, name
        got, detail, _ = categorize(by_name[name], registered)
        assert got == category, f"{name}: {got} ({detail})"
