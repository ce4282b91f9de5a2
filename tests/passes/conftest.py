"""Shared helpers for the pass tests, handed out as fixtures (the suite runs with
`--import-mode=importlib`, where test modules cannot import a sibling helper module).

- `make_model`: an ONNX model from onnx.helper nodes, input shapes and weights.
- `ir_text`: the IR text with constant data left out (names and types stay), for goldens.
- `check_numeric`: import, run a pass, emit, and compare onnxruntime outputs before and
  after within the pass's declared `tolerance` (exact equality when it is 0).
- `check_unchanged`: the pass does not fire: `changed` is False and the text is equal;
  for rule-based passes it returns the reason each declining node was given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from hwnas.backends.emit.onnx import to_onnx
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph
from hwnas.ir.text import print_graph
from hwnas.ir.verifier import verify
from hwnas.passes.base import Pass, PassResult
from hwnas.passes.rewrite import Rule, apply_rules

SEED = 0
OPSET = 17


def build_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int] | tuple[int, Sequence[int]]],
    outputs: Sequence[str],
    weights: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """`inputs` maps a name to its shape (float32), or to (onnx element type, shape)."""

    def info(name: str, spec: Sequence[int] | tuple[int, Sequence[int]]) -> onnx.ValueInfoProto:
        if len(spec) == 2 and isinstance(spec[1], list | tuple):
            return helper.make_tensor_value_info(name, spec[0], spec[1])  # type: ignore[arg-type]
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(spec))  # type: ignore[arg-type]

    graph = helper.make_graph(
        list(nodes),
        "g",
        [info(k, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), k) for k, a in (weights or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    # onnxruntime's own rewrites (it folds BatchNorm too) would hide what our pass did.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


_NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def random_feeds(model: onnx.ModelProto, seed: int = SEED) -> dict[str, np.ndarray]:
    """Random inputs for every graph input (symbolic dims become 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session(model).get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        dtype = _NP_TYPES[i.type]
        if dtype is np.bool_:
            feeds[i.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[i.name] = rng.integers(0, 4, shape).astype(dtype)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session(model).run(None, feeds)


def assert_outputs_close(expected: list[np.ndarray], actual: list[np.ndarray], tolerance: float) -> None:
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual, strict=True):
        assert e.shape == a.shape and e.dtype == a.dtype
        if tolerance == 0:
            np.testing.assert_array_equal(a, e)
        else:
            np.testing.assert_allclose(a, e, rtol=0, atol=tolerance)


def elided_text(graph: Graph) -> str:
    """`print_graph(elide_weights=True)` without the data of constants (their names and
    types stay): goldens then say what a pass did, not which random numbers it made."""
    text = print_graph(graph, elide_weights=True)
    return re.sub(r"^(  const %[^\n]*?) = dense<[^\n]*$", r"\1", text, flags=re.MULTILINE)


def run_and_check(model: onnx.ModelProto, p: Pass) -> PassResult:
    """Import, run the pass, check the verifier passes and that a second run changes nothing."""
    result = p.run(import_onnx(model))
    verify(result.graph)
    before = print_graph(result.graph)
    assert p.run(result.graph).changed is False, f"{p.spec()} claims a change on its own output"
    assert print_graph(result.graph) == before
    return result


def numeric(model: onnx.ModelProto, p: Pass, seed: int = SEED) -> None:
    """The pass fires, and onnxruntime gives the same outputs within `p.tolerance`."""
    result = p.run(import_onnx(model))
    assert result.changed is True
    verify(result.graph)
    emitted = to_onnx(result.graph)
    onnx.checker.check_model(emitted, full_check=True)
    feeds = random_feeds(model, seed)
    assert_outputs_close(run_model(model, feeds), run_model(emitted, feeds), max(p.tolerance, 0.0))


def unchanged(model: onnx.ModelProto | Graph, p: Pass, rules: Sequence[Rule] = ()) -> dict[str, str]:
    """The pass does not fire. Returns {node name: reason} from `apply_rules(graph, rules)`."""
    graph = model if isinstance(model, Graph) else import_onnx(model)
    before = print_graph(graph)
    result = p.run(graph)
    assert result.changed is False
    assert print_graph(result.graph) == before
    reasons: dict[str, str] = {}
    if rules:
        stats = apply_rules(result.graph, rules)
        assert not stats.changed
        assert print_graph(result.graph) == before
        for pairs in stats.declined.values():
            for node, reason in pairs:
                reasons[node] = reasons[node] + "; " + reason if node in reasons else reason
    return reasons


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


@pytest.fixture
def make_model() -> Callable[..., onnx.ModelProto]:
    return build_model


@pytest.fixture
def ir_text() -> Callable[[Graph], str]:
    return elided_text


@pytest.fixture
def check_golden() -> Callable[[onnx.ModelProto, Pass], PassResult]:
    """Run a pass on an imported model (it must fire, verify, and be idempotent)."""

    def check(model: onnx.ModelProto, p: Pass) -> PassResult:
        result = run_and_check(model, p)
        assert result.changed is True
        return result

    return check


@pytest.fixture
def check_numeric() -> Callable[[onnx.ModelProto, Pass], None]:
    return numeric


@pytest.fixture
def check_unchanged() -> Callable[..., dict[str, str]]:
    return unchanged


@pytest.fixture
def ort_outputs() -> Callable[[onnx.ModelProto, dict[str, np.ndarray]], list[np.ndarray]]:
    return run_model


@pytest.fixture
def feeds_for() -> Callable[..., dict[str, np.ndarray]]:
    return random_feeds


@pytest.fixture
def outputs_close() -> Callable[[list[np.ndarray], list[np.ndarray], float], None]:
    return assert_outputs_close
