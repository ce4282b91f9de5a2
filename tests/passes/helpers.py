"""Shared helpers for the pass tests (test modules import them relatively: `from .helpers
import ...`, which works under pytest's importlib import mode).

- `build_model`: an ONNX model from onnx.helper nodes, input shapes and weights.
- `elided_text`: the IR text with constant data left out (names and types stay), for goldens.
- `fires`: import, run a pass that must fire; the result verifies and a second run changes nothing.
- `numeric`: run the model and the pass's emitted result in onnxruntime on the same random
  inputs; outputs agree within the pass's declared `tolerance` (exactly when it is 0).
- `unchanged`: the pass does not fire (`changed` is False, the text is equal); for rule-based
  passes it returns the reason each declining node was given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, shape_inference

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
        [onnx.ValueInfoProto(name=o) for o in outputs],  # typed by shape inference below
        initializer=[numpy_helper.from_array(np.asarray(a), k) for k, a in (weights or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    model = shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def randn(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def uniform(rng: np.random.Generator, low: float, high: float, *shape: int) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


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


def node_lines(graph: Graph) -> str:
    """The node lines of `elided_text` (no header, inputs, constants or outputs)."""
    return "\n".join(ln for ln in elided_text(graph).splitlines() if ln.startswith("  %")) + "\n"


def fires(model: onnx.ModelProto | Graph, p: Pass) -> PassResult:
    """Run a pass that must fire; the result verifies and a second run changes nothing."""
    result = p.run(model if isinstance(model, Graph) else import_onnx(model))
    assert result.changed is True
    verify(result.graph)
    before = print_graph(result.graph)
    assert p.run(result.graph).changed is False, f"{p.spec()} claims a change on its own output"
    assert print_graph(result.graph) == before
    return result


def numeric(model: onnx.ModelProto, p: Pass, graph: Graph | None = None, seed: int = SEED) -> None:
    """The pass fires on `graph` (default: the imported model), and onnxruntime gives the
    model's outputs within `p.tolerance` from the emitted result on the same random inputs."""
    result = p.run(import_onnx(model) if graph is None else graph)
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
