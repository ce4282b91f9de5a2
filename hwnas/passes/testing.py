"""What a pass author needs to test a pass the house way (STYLE.md: three tests per pass).

- golden: `node_lines(result.graph) == expected` (or `elided_text` for the whole graph):
  the IR text after the pass, constant data left out, so a golden says what the pass did;
- numeric: `numeric(model, p)` runs the model and the pass's emitted result in real
  onnxruntime sessions on the same random inputs; outputs agree within `p.tolerance`
  (exactly when it is 0);
- negative: `unchanged(model, p, rules)` checks the pass did not fire and returns the
  reason each rule gave for each node it declined.

`fires(model, p)` runs a pass that must fire: the result verifies and a second run changes
nothing (`changed` is honest). `build_model` makes a small ONNX model from onnx.helper nodes.
Failures raise AssertionError with a message, so these work under pytest and without it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, shape_inference

from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.sessions import session as ort_session
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.graph import Graph
from hwnas.ir.text import print_graph
from hwnas.ir.verifier import verify
from hwnas.passes.base import Pass, PassResult
from hwnas.passes.rewrite import Rule, apply_rules

SEED = 0
OPSET = 17

Shape = Sequence[int | str]
"""Dims of a model input: numbers, or names for symbolic dims ('N')."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def build_model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, Shape | tuple[int, Shape]],
                outputs: Sequence[str], weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """An opset-17 model of NODES. `inputs` maps a name to its shape (float32) or to
    (onnx element type, shape); outputs are typed by onnx's shape inference; `weights`
    become initializers. The model passes onnx's full check."""

    def info(name: str, spec: Shape | tuple[int, Shape]) -> onnx.ValueInfoProto:
        elem, shape = (spec[0], spec[1]) if len(spec) == 2 and isinstance(spec[1], list | tuple) \
            else (onnx.TensorProto.FLOAT, spec)
        return helper.make_tensor_value_info(name, elem, list(shape))  # type: ignore[arg-type]

    graph = helper.make_graph(
        list(nodes),
        "g",
        [info(k, v) for k, v in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), k) for k, a in (weights or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    model = shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def randn(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Standard normal float32 samples of SHAPE."""
    return rng.standard_normal(shape).astype(np.float32)


def uniform(rng: np.random.Generator, low: float, high: float, *shape: int) -> np.ndarray:
    """Uniform float32 samples in [LOW, HIGH) of SHAPE."""
    return rng.uniform(low, high, shape).astype(np.float32)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A one-thread session with onnxruntime's own rewrites off: they fold BatchNorm and
    fuse too, and would hide what the pass under test did."""
    return ort_session(model, optimization="disable", source=f"model '{model.graph.name}'")


_NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def random_feeds(model: onnx.ModelProto, seed: int = SEED) -> dict[str, np.ndarray]:
    """Random inputs for every graph input (symbolic dims become 1; integers in 0..3)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
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
    """MODEL's outputs on FEEDS in onnxruntime (see `session`)."""
    return list(session(model).run(None, feeds))


def assert_outputs_close(expected: list[np.ndarray], actual: list[np.ndarray], tolerance: float) -> None:
    """Same count, shapes and dtypes, and values within TOLERANCE (bit-equal when it is 0)."""
    _check(len(expected) == len(actual), f"{len(actual)} outputs, expected {len(expected)}")
    for e, a in zip(expected, actual, strict=True):
        _check(e.shape == a.shape and e.dtype == a.dtype, f"output {a.dtype}{a.shape}, expected {e.dtype}{e.shape}")
        if tolerance == 0:
            np.testing.assert_array_equal(a, e)
        else:
            np.testing.assert_allclose(a, e, rtol=0, atol=tolerance)


def elided_text(graph: Graph) -> str:
    """The IR text with weights elided and the data of small constants left out too (their
    names and types stay): goldens then say what a pass did, not which numbers it made."""
    text = print_graph(graph, elide_weights=True)
    return re.sub(r"^(  const %[^\n]*?) = dense<[^\n]*$", r"\1", text, flags=re.MULTILINE)


def node_lines(graph: Graph) -> str:
    """The node lines of `elided_text` (no header, inputs, constants or outputs): a golden."""
    return "\n".join(ln for ln in elided_text(graph).splitlines() if ln.startswith("  %")) + "\n"


def fires(model: onnx.ModelProto | Graph, p: Pass) -> PassResult:
    """Run a pass that must fire: it reports a change, the result verifies, and a second
    run on its own output changes nothing (so its `changed` is honest)."""
    result = p.run(model if isinstance(model, Graph) else import_onnx(model))
    _check(result.changed is True, f"{p.spec()} did not fire")
    verify(result.graph)
    before = print_graph(result.graph)
    _check(p.run(result.graph).changed is False, f"{p.spec()} claims a change on its own output")
    _check(print_graph(result.graph) == before, f"{p.spec()} changed its own output a second time")
    return result


def numeric(model: onnx.ModelProto, p: Pass, graph: Graph | None = None, seed: int = SEED) -> None:
    """The pass fires on GRAPH (default: the imported model), the emitted result passes
    onnx's full check, and onnxruntime gives the model's outputs within `p.tolerance` on the
    same random inputs."""
    result = p.run(import_onnx(model) if graph is None else graph)
    _check(result.changed is True, f"{p.spec()} did not fire")
    verify(result.graph)
    emitted = to_onnx(result.graph)
    onnx.checker.check_model(emitted, full_check=True)
    feeds = random_feeds(model, seed)
    assert_outputs_close(run_model(model, feeds), run_model(emitted, feeds), max(p.tolerance, 0.0))


def unchanged(model: onnx.ModelProto | Graph, p: Pass, rules: Sequence[Rule] = ()) -> dict[str, str]:
    """The pass does not fire: `changed` is False and the IR text is equal. With the pass's
    RULES, returns {node name: the reason each declining rule gave}."""
    graph = model if isinstance(model, Graph) else import_onnx(model)
    before = print_graph(graph)
    result = p.run(graph)
    _check(result.changed is False, f"{p.spec()} reports a change")
    _check(print_graph(result.graph) == before, f"{p.spec()} changed the graph but says it did not")
    reasons: dict[str, str] = {}
    if rules:
        stats = apply_rules(result.graph, rules)
        _check(not stats.changed, "a rule fired that the pass did not")
        _check(print_graph(result.graph) == before, "the rules changed the graph")
        for pairs in stats.declined.values():
            for node, reason in pairs:
                reasons[node] = reasons[node] + "; " + reason if node in reasons else reason
    return reasons
