"""canonicalize: the six canonicalization passes to a fixpoint, on a small model and on
the nine model-zoo "light" models that ship with onnx."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import helper

from hwnas.backends.emit.onnx import to_onnx
from hwnas.frontends.onnx import import_onnx
from hwnas.ir.verifier import verify
from hwnas.passes.canonicalize import Canonicalize
from hwnas.passes.fold_batchnorm import FoldBatchNorm
from hwnas.passes.instruments import Timing
from hwnas.passes.pipeline import PassRunner
from hwnas.passes.testing import (
    SEED,
    assert_outputs_close,
    build_model,
    fires,
    node_lines,
    numeric,
    randn,
    random_feeds,
    run_model,
    uniform,
)

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(glob.glob(os.path.join(LIGHT_DIR, "*.onnx")))


def small_cnn() -> onnx.ModelProto:
    """Identity -> Conv -> BN -> Dropout -> Relu -> Reshape(computed target) -> Gemm."""
    rng = np.random.default_rng(SEED)
    target = onnx.numpy_helper.from_array(np.array([1, -1], np.int64))
    nodes = [
        helper.make_node("Identity", ["x"], ["i"], name="identity"),
        helper.make_node("Conv", ["i", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], name="bn"),
        helper.make_node("Dropout", ["n"], ["d"], name="dropout"),
        helper.make_node("Relu", ["d"], ["r"], name="relu"),
        helper.make_node("Constant", [], ["target"], name="make_target", value=target),
        helper.make_node("Reshape", ["r", "target"], ["f"], name="reshape"),
        helper.make_node("Gemm", ["f", "w2"], ["y"], name="gemm", transB=1),
    ]
    weights = {"w": randn(rng, 4, 3, 3, 3), "b": randn(rng, 4), "scale": uniform(rng, 0.5, 1.5, 4),
               "shift": randn(rng, 4), "mean": randn(rng, 4), "var": uniform(rng, 0.5, 1.5, 4),
               "w2": randn(rng, 5, 64)}
    return build_model(nodes, {"x": [1, 3, 4, 4]}, ["y"], weights)


def test_tolerance_is_fold_batchnorm_s() -> None:
    assert Canonicalize.tolerance == FoldBatchNorm.tolerance > 0


def test_golden_small_cnn() -> None:
    result = fires(small_cnn(), Canonicalize())
    assert node_lines(result.graph) == """\
  %c: f32[1,4,4,4] = Conv(%x, %conv_w_bnfolded, %conv_b_bnfolded) {pads=[1, 1, 1, 1]} @conv \
#{"fused_activation": {"node": "relu", "op": "Relu"}}
  %r: f32[1,4,4,4] = Relu(%c) @relu #{"fused_into": {"node": "conv"}}
  %f: f32[1,64] = Reshape(%r, %target_folded) @reshape
  %y: f32[1,5] = Gemm(%f, %w2) {transB=1} @gemm
"""
    assert sorted(result.graph.constants) == ["conv_b_bnfolded", "conv_w_bnfolded", "target_folded", "w2"]


def test_numeric_small_cnn() -> None:
    numeric(small_cnn(), Canonicalize())


def test_runs_its_passes_to_a_fixpoint() -> None:
    timing = Timing()
    PassRunner([timing]).run(Canonicalize(), import_onnx(small_cnn()))
    children = [name for depth, name, _, _ in timing.records if depth == 1]
    round_ = ["fold-qdq", "eliminate-noops", "fold-constants", "fold-pad", "fold-batchnorm", "dce", "refresh-shapes",
              "fuse-activations"]
    # Round 1 changes the graph, round 2 confirms nothing is left to do.
    assert children == round_ * 2
    assert [changed for depth, _, _, changed in timing.records if depth == 1][len(round_):] == [False] * len(round_)


def test_already_canonical() -> None:
    graph = fires(small_cnn(), Canonicalize()).graph  # `fires` also checks a second run is a no-op
    assert Canonicalize().run(graph).changed is False


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=[os.path.basename(p)[6:-5] for p in LIGHT_MODELS])
def test_light_model(path: str) -> None:
    model = onnx.load(path)
    graph = import_onnx(model)
    result = Canonicalize().run(graph)
    assert result.changed is True
    verify(result.graph)
    emitted = to_onnx(result.graph)
    onnx.checker.check_model(emitted, full_check=True)
    feeds = random_feeds(model, SEED)
    assert_outputs_close(run_model(model, feeds), run_model(emitted, feeds), 1e-5)
    assert Canonicalize().run(result.graph).changed is False


def with_random_weights(model: onnx.ModelProto, seed: int = SEED) -> onnx.ModelProto:
    """The light models compute their weights with ConstantOfShape (all 0.02), so every
    class gets the same logit and outputs are a flat 0.001. Replace the Conv, Gemm and
    BatchNormalization parameters by random initializers (He-scaled weights, positive
    variances), then expose the logits beside the softmax, so that the outputs depend on
    what canonicalize folded."""
    rng = np.random.default_rng(seed)
    g = model.graph
    shapes = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    readers: dict[str, set[tuple[str, int]]] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            readers.setdefault(name, set()).add((n.op_type, i))
    kept = []
    for n in g.node:
        use = readers.get(n.output[0], set()) if n.op_type == "ConstantOfShape" else set()
        if len(use) != 1 or n.input[0] not in shapes:
            kept.append(n)
            continue
        shape = tuple(int(d) for d in shapes[n.input[0]])
        (op, index), = use
        if op in ("Conv", "Gemm") and index == 1:
            fan_in = int(np.prod(shape[1:])) if op == "Conv" else min(shape)
            array = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif op == "BatchNormalization" and index in (1, 4):
            array = rng.uniform(0.5, 1.5, shape)
        elif op in ("Conv", "Gemm", "BatchNormalization") and index in (2, 3):
            array = rng.normal(0.0, 0.1, shape)
        else:
            kept.append(n)
            continue
        g.initializer.append(onnx.numpy_helper.from_array(array.astype(np.float32), n.output[0]))
        # These models are IR version 3, where initializers are also graph inputs.
        g.input.append(helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, shape))
    del g.node[:]
    g.node.extend(kept)
    for n in g.node:
        if n.op_type == "Softmax":
            g.output.append(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
    return model


WITH_BATCHNORM = [p for p in LIGHT_MODELS if any(k in p for k in ("densenet", "inception_v2", "resnet", "shufflenet"))]


@pytest.mark.parametrize("path", WITH_BATCHNORM, ids=[os.path.basename(p)[6:-5] for p in WITH_BATCHNORM])
def test_light_model_with_random_weights(path: str) -> None:
    model = with_random_weights(onnx.load(path))
    graph = import_onnx(model)
    batchnorms = sum(n.op == "BatchNormalization" for n in graph.nodes)
    result = Canonicalize().run(graph)
    verify(result.graph)
    # Every BatchNormalization right after a Conv is folded (densenet's after a Concat stay).
    left = [n for n in result.graph.nodes if n.op == "BatchNormalization"]
    assert len(left) < batchnorms
    assert [n.name for n in left if n.input(0).producer.op == "Conv"] == []
    emitted = to_onnx(result.graph)
    onnx.checker.check_model(emitted, full_check=True)
    feeds = random_feeds(model, SEED)
    for expected, actual in zip(run_model(model, feeds), run_model(emitted, feeds), strict=True):
        # Random (not trained) statistics let resnet's logits grow to 1e5; float32 rounding
        # grows with them, so the tolerance is taken relative to the output's scale.
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=Canonicalize.tolerance * scale)


def test_all_nine_light_models_are_there() -> None:
    assert len(LIGHT_MODELS) == 9, LIGHT_DIR
