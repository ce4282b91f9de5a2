"""IR → PyTorch: outputs match onnxruntime, weights train and flow back into the IR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.emit.torch import to_torch, weights_to_graph
from hwnas.errors import UnsupportedModelError
from hwnas.frontends import load_graph
from hwnas.search.spaces import to_graph
from hwnas.search.spaces.mobilenetv2 import MBConfig, build

from .graphs import Builder

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "small_cnn.onnx"


def _ort(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _torch(graph, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    with torch.no_grad():
        return to_torch(graph)(torch.from_numpy(x)).numpy()


def _input(graph) -> np.ndarray:  # noqa: ANN001
    return np.random.default_rng(0).standard_normal(graph.inputs[0].type.shape).astype(np.float32)


def test_light_models_match_onnxruntime(light_model: str) -> None:
    graph = load_graph(light_model)
    x = _input(graph)
    np.testing.assert_allclose(_torch(graph, x), _ort(to_onnx(graph).SerializeToString(), x), atol=1e-4)


def test_mobilenetv2_like_net_matches_onnxruntime() -> None:
    torch.manual_seed(0)
    config = MBConfig(width=0.5, resolution=64, num_classes=10)
    graph = to_graph(build(config), config.input_shape, "mbv2")
    x = _input(graph)
    np.testing.assert_allclose(_torch(graph, x), _ort(to_onnx(graph).SerializeToString(), x), atol=1e-4)


def test_trained_weights_flow_back_into_the_ir() -> None:
    graph = load_graph(EXAMPLE)
    module = to_torch(graph)
    assert sum(p.numel() for p in module.parameters()) > 1000
    x = torch.from_numpy(_input(graph))
    target = torch.zeros(1, 10)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    before = module(x).detach()
    for _ in range(5):
        opt.zero_grad()
        loss = ((module(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    after = module(x).detach()
    assert ((after - target) ** 2).mean() < ((before - target) ** 2).mean()
    weights_to_graph(module)
    np.testing.assert_allclose(_ort(to_onnx(graph).SerializeToString(), x.numpy()), after.numpy(), atol=1e-4)


def test_an_op_without_emission_is_refused() -> None:
    b = Builder((1, 4))
    node = b.g.add_node("MyOp", [b.x], name="custom", domain="com.example", output_names=["custom_y"])
    with pytest.raises(UnsupportedModelError, match="node 'custom' \\(com.example::MyOp\\): no PyTorch emission"):
        to_torch(b.done(node.outputs[0]))


def test_weights_built_by_constant_of_shape_train_and_flow_back(light_model_paths: dict[str, str]) -> None:
    graph = load_graph(light_model_paths["squeezenet"])
    built = sum(1 for n in graph.nodes if n.op == "ConstantOfShape")
    assert built > 10
    module = to_torch(graph)
    assert len(list(module.parameters())) >= built
    x = torch.from_numpy(_input(graph))
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    loss = module(x).square().mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = module(x)
    weights_to_graph(module)
    assert not any(n.op == "ConstantOfShape" for n in graph.nodes), "trained weights are constants now"
    np.testing.assert_allclose(_ort(to_onnx(graph).SerializeToString(), x.numpy()), after.numpy(), rtol=1e-4,
                               atol=1e-4 * float(after.abs().max()))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_and_gather_match_onnxruntime(mode: str) -> None:
    from hwnas.ir.attributes import Attr

    b = Builder((2, 3, 6, 6))
    pads = b.g.add_constant(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")
    value = b.g.add_constant(np.array(0.5, np.float32), "value")
    y = b.op("Pad", b.x, pads, *([value] if mode == "constant" else []), name="pad", mode=Attr.string(mode))
    shape = b.op("Shape", y, name="shape")
    idx = b.g.add_constant(np.array([0, -1], np.int64), "idx")
    dims = b.op("Gather", shape, idx, name="dims", axis=Attr.int(0))
    b.g.outputs.extend([b.op("Relu", y, name="relu"), dims])
    x = _input(b.g)
    sess = ort.InferenceSession(to_onnx(b.g).SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})
    with torch.no_grad():
        got = to_torch(b.g)(torch.from_numpy(x))
    np.testing.assert_allclose(got[0].numpy(), ref[0], atol=1e-6)
    np.testing.assert_array_equal(got[1].numpy(), ref[1])


def test_efficientnet_lite0_matches_onnxruntime() -> None:
    from hwnas.tasks import load_task
    from hwnas.tasks.evaluate import predict

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = load_task("efficientnet-lite0", num_photos=2)
        with torch.no_grad():
            got = to_torch(s.graph)(torch.from_numpy(s.test[0][:2])).numpy()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(got, predict(s.graph, s, "test")[:2], atol=1e-4)


def test_prelu_and_slice_match_onnxruntime() -> None:
    big = np.iinfo(np.int64).max
    cases = [([0], [2], [1], [1]), ([1, -3], [big, -1], [2, 3], [2, 1]), ([-1], [-big], [3], [-1]),
             ([4, 5], [0, 1], [2, 3], [-2, -3]), ([0], [100], [-1], [3])]
    for starts, ends, axes, steps in cases:
        b = Builder((2, 4, 6, 7), "prelu_slice")
        per_channel = b.g.add_constant(np.array([0.1, -0.5, 2.0, 0.0], np.float32).reshape(4, 1, 1), "slope")
        scalar = b.g.add_constant(np.array([0.25], np.float32), "scalar")
        y = b.op("PRelu", b.op("PRelu", b.x, per_channel, name="p1"), scalar, name="p2")
        inputs = [b.g.add_constant(np.array(v, np.int64), k) for k, v in
                  (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))]
        b.done(b.op("Slice", y, *inputs, name="slice"))
        x = _input(b.g)
        ref = _ort(to_onnx(b.g).SerializeToString(), x)
        got = _torch(b.g, x)
        assert got.shape == ref.shape, (starts, ends, axes, steps)
        np.testing.assert_array_equal(got, ref)


def _check_against_onnxruntime(nodes: list, inputs: dict[str, np.ndarray], outputs: list[str], opset: int,
                               initializers: tuple = (), atol: float = 1e-6) -> None:
    """The ONNX graph of `nodes`, run by onnxruntime and by the torch emission of its IR."""
    import onnx
    from onnx import helper

    from hwnas.frontends.onnx import import_onnx

    typed_inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                    for k, v in inputs.items()]
    graph = helper.make_graph(nodes, "ops", typed_inputs, [onnx.ValueInfoProto(name=k) for k in outputs],
                              list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)
    typed = {v.name: v for v in model.graph.value_info}
    for v in model.graph.output:
        v.CopyFrom(typed.get(v.name, v))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(outputs, inputs)
    ir = import_onnx(model)
    with torch.no_grad():
        got = to_torch(ir)(*(torch.from_numpy(inputs[v.name]) for v in ir.inputs))
    got = got if isinstance(got, tuple) else (got,)
    by_name = dict(zip([v.name for v in ir.outputs], got, strict=True))
    for name, r in zip(outputs, ref, strict=True):
        g = by_name[name].numpy()
        assert g.dtype == r.dtype and g.shape == r.shape, (name, g.dtype, r.dtype, g.shape, r.shape)
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=atol, err_msg=name)


def _const(name: str, value: object, dtype: type = np.float32):  # noqa: ANN202
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(value, dtype), name)


def test_elementwise_comparison_and_cast_ops_match_onnxruntime() -> None:
    from onnx import TensorProto, helper

    n = helper.make_node
    unary = ["Sqrt", "Exp", "Reciprocal", "Log"]  # on |x| + 1
    signed = ["Abs", "Neg", "Floor", "Ceil", "Round", "Sign", "Erf", "Sin", "Cos", "Softplus", "Softsign", "Selu",
              "Elu"]
    nodes = [n("Abs", ["x"], ["ax"]), n("Add", ["ax", "one"], ["pos"])]
    nodes += [n(o, ["pos"], [f"{o}_y"]) for o in unary] + [n(o, ["x2"], [f"{o}_y"]) for o in signed]
    nodes += [n("Mul", ["x", "twohalf"], ["x2"]),
              n("Pow", ["x", "two"], ["pow_f"]), n("Pow", ["x", "three"], ["pow_i"]),
              n("Max", ["x", "Floor_y", "Cos_y"], ["max_y"]), n("Min", ["x", "Ceil_y"], ["min_y"]),
              n("Mean", ["x", "Sin_y", "Erf_y"], ["mean_y"]),
              n("Greater", ["x", "zero"], ["gt"]), n("Where", ["gt", "x", "Neg_y"], ["where_y"]),
              n("Equal", ["Floor_y", "Ceil_y"], ["eq"]), n("LessOrEqual", ["x", "zero"], ["le"]),
              n("Not", ["le"], ["not_le"]), n("Xor", ["eq", "not_le"], ["xor"]), n("Or", ["xor", "gt"], ["or"]),
              n("And", ["or", "eq"], ["logic"]),
              n("Cast", ["logic"], ["logic_f"], to=TensorProto.FLOAT),
              n("Cast", ["x2"], ["x2_i"], to=TensorProto.INT32),  # truncation toward zero
              n("Cast", ["x2_i"], ["x2_d"], to=TensorProto.DOUBLE)]
    outputs = [f"{o}_y" for o in unary + signed] + ["pow_f", "pow_i", "max_y", "min_y", "mean_y", "where_y",
                                                    "logic_f", "x2_i", "x2_d"]
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32) * 3
    x.flat[:4] = [0.5, -0.5, 1.5, -2.5]  # Round's ties go to even in both
    _check_against_onnxruntime(nodes, {"x": x}, outputs, 17,
                               (_const("one", 1.0), _const("zero", 0.0), _const("two", 2.0), _const("twohalf", 1.25),
                                _const("three", 3, np.int64)), atol=1e-5)


@pytest.mark.parametrize("opset", [17, 18])
def test_reductions_and_arg_ops_match_onnxruntime(opset: int) -> None:
    from onnx import helper

    def reduce(kind: str, out: str, axes: list[int] | None, **attrs: int):  # noqa: ANN202
        if axes is None:
            return [helper.make_node(kind, ["x"], [out], **attrs)]
        if opset >= 18 or kind == "ReduceSum":
            name = f"{out}_axes"
            return [helper.make_node("Constant", [], [name], value=_const(name, axes, np.int64)),
                    helper.make_node(kind, ["x", name], [out], **attrs)]
        return [helper.make_node(kind, ["x"], [out], axes=axes, **attrs)]

    cases = [("ReduceMean", [1], {"keepdims": 0}), ("ReduceSum", [-1, 2], {}), ("ReduceMax", None, {}),
             ("ReduceMin", [0, 3], {"keepdims": 0}), ("ReduceL2", [2], {}), ("ReduceL1", [1, 2], {}),
             ("ReduceSumSquare", [3], {}), ("ReduceLogSumExp", [-1], {"keepdims": 0})]
    nodes, outputs = [], []
    for i, (kind, axes, attrs) in enumerate(cases):
        nodes += reduce(kind, f"r{i}", axes, **attrs)
        outputs.append(f"r{i}")
    if opset >= 18:  # no axes and noop_with_empty_axes: the input as it is
        nodes += [helper.make_node("ReduceMean", ["x"], ["noop"], noop_with_empty_axes=1)]
        outputs.append("noop")
    nodes += [helper.make_node("Floor", ["x"], ["fx"]),  # ties, so that select_last_index matters
              helper.make_node("ArgMax", ["fx"], ["amax_last"], axis=2, select_last_index=1),
              helper.make_node("ArgMax", ["fx"], ["amax_first"], axis=-1, keepdims=0),
              helper.make_node("ArgMin", ["fx"], ["amin_last"], axis=1, select_last_index=1, keepdims=0)]
    outputs += ["amax_last", "amax_first", "amin_last"]
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    _check_against_onnxruntime(nodes, {"x": x}, outputs, opset)


def test_layer_norm_split_expand_range_and_tile_match_onnxruntime() -> None:
    from onnx import helper

    n = helper.make_node
    rng = np.random.default_rng(2)
    nodes = [n("LayerNormalization", ["x", "gamma", "beta"], ["ln_last"], epsilon=1e-3),
             n("LayerNormalization", ["x", "gamma2"], ["ln_mid", "ln_mean", "ln_inv"], axis=1),
             n("Split", ["x", "parts"], ["s0", "s1"], axis=2),
             n("Split", ["x"], ["e0", "e1", "e2"], axis=1),
             n("Expand", ["s0", "shape"], ["expanded"]),
             n("Range", ["start", "limit", "delta"], ["range_i"]),
             n("Range", ["fstart", "flimit", "fdelta"], ["range_f"]),
             n("Tile", ["s1", "reps"], ["tiled"])]
    inits = (_const("gamma", rng.standard_normal(8)), _const("beta", rng.standard_normal(8)),
             _const("gamma2", rng.standard_normal((6, 5, 8))), _const("parts", [2, 3], np.int64),
             _const("shape", [3, 1, 1, 2, 1], np.int64), _const("start", 1, np.int64), _const("limit", 11, np.int64),
             _const("delta", 3, np.int64), _const("fstart", 0.5), _const("flimit", -1.0), _const("fdelta", -0.25),
             _const("reps", [1, 2, 1, 3], np.int64))
    x = rng.standard_normal((2, 6, 5, 8)).astype(np.float32)
    _check_against_onnxruntime(nodes, {"x": x}, ["ln_last", "ln_mid", "ln_mean", "ln_inv", "s0", "s1", "e0", "e1",
                                                  "e2", "expanded", "range_i", "range_f", "tiled"], 17, inits,
                               atol=1e-5)


def test_resize_matches_onnxruntime_and_refuses_what_it_cannot_emit() -> None:
    from onnx import helper

    def resize(out: str, scales: list[float] | None = None, sizes: list[int] | None = None, **attrs: object):  # noqa: ANN202
        inputs = ["x", "", f"{out}_scales" if scales else "", f"{out}_sizes" if sizes else ""]
        consts = [_const(f"{out}_scales", scales)] if scales else [_const(f"{out}_sizes", sizes, np.int64)]
        return helper.make_node("Resize", [i for i in inputs], [out], **attrs), consts

    cases = [resize("near_up", [1, 1, 2, 2], mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor"),
             resize("near_down", [1, 1, 0.5, 0.5], mode="nearest"),  # half_pixel, round_prefer_floor: ties
             resize("near_sizes", sizes=[1, 3, 5, 11], mode="nearest", coordinate_transformation_mode="align_corners",
                    nearest_mode="round_prefer_ceil"),
             resize("near_odd", [1, 1, 1.7, 0.6], mode="nearest",
                    coordinate_transformation_mode="half_pixel_symmetric"),
             resize("lin_up", [1, 1, 2, 2], mode="linear"),
             resize("lin_sizes", sizes=[1, 3, 9, 4], mode="linear", coordinate_transformation_mode="align_corners"),
             resize("lin_down", [1, 1, 0.5, 0.75], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
             resize("cubic_up", [1, 1, 2, 1.5], mode="cubic")]
    nodes, inits = [c[0] for c in cases], tuple(i for c in cases for i in c[1])
    x = np.random.default_rng(3).standard_normal((1, 3, 6, 8)).astype(np.float32)
    _check_against_onnxruntime(nodes, {"x": x}, [c[0].output[0] for c in cases], 18, inits, atol=1e-5)

    from hwnas.frontends.onnx import import_onnx

    node, consts = resize("crop", [1, 1, 2, 2], mode="linear", coordinate_transformation_mode="tf_crop_and_resize")
    model = helper.make_model(helper.make_graph(
        [node], "crop", [helper.make_tensor_value_info("x", 1, x.shape)],
        [helper.make_tensor_value_info("crop", 1, None)], consts), opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(UnsupportedModelError, match="node '.*' \\(Resize\\): linear with tf_crop_and_resize"):
        to_torch(import_onnx(model))(torch.from_numpy(x))


def test_conv_transpose_matches_onnxruntime() -> None:
    from onnx import helper

    rng = np.random.default_rng(4)
    n = helper.make_node
    nodes = [n("ConvTranspose", ["x", "w", "b"], ["up"], strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1],
               group=2),
             n("ConvTranspose", ["x", "w2"], ["dilated"], dilations=[2, 1], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             n("Reshape", ["x", "flat"], ["x1d"]),
             n("ConvTranspose", ["x1d", "w1d", "b1d"], ["up1d"], strides=[3], pads=[2, 1])]
    inits = (_const("w", rng.standard_normal((4, 3, 3, 3))), _const("b", rng.standard_normal(6)),
             _const("w2", rng.standard_normal((4, 5, 3, 3))), _const("flat", [1, 4, -1], np.int64),
             _const("w1d", rng.standard_normal((4, 2, 4))), _const("b1d", rng.standard_normal(2)))
    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    _check_against_onnxruntime(nodes, {"x": x}, ["up", "dilated", "up1d"], 17, inits, atol=1e-4)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_gru_and_rnn_match_onnxruntime(direction: str) -> None:
    from onnx import helper

    rng = np.random.default_rng(5)
    dirs, hidden, feat, seq, batch = 2 if direction == "bidirectional" else 1, 6, 4, 7, 3

    def w(*shape: int):  # noqa: ANN202
        return rng.standard_normal(shape) * 0.5

    n = helper.make_node
    nodes = [n("LSTM", ["x", "lw", "lr", "lb", "", "h0", "c0", "lp"], ["ly", "lh", "lc"], hidden_size=hidden,
               direction=direction),
             n("LSTM", ["x", "lw", "lr"], ["ly_b", "lh_b"], hidden_size=hidden, direction=direction),
             n("GRU", ["x", "gw", "gr", "gb", "", "h0"], ["gy", "gh"], hidden_size=hidden, direction=direction),
             n("GRU", ["x", "gw", "gr", "gb"], ["gy_lbr"], hidden_size=hidden, direction=direction,
               linear_before_reset=1),
             n("RNN", ["x", "rw", "rr", "rb", "", "h0"], ["ry", "rh"], hidden_size=hidden, direction=direction)]
    inits = (_const("lw", w(dirs, 4 * hidden, feat)), _const("lr", w(dirs, 4 * hidden, hidden)),
             _const("lb", w(dirs, 8 * hidden)), _const("lp", w(dirs, 3 * hidden)),
             _const("gw", w(dirs, 3 * hidden, feat)), _const("gr", w(dirs, 3 * hidden, hidden)),
             _const("gb", w(dirs, 6 * hidden)), _const("rw", w(dirs, hidden, feat)),
             _const("rr", w(dirs, hidden, hidden)), _const("rb", w(dirs, 2 * hidden)))
    inputs = {"x": rng.standard_normal((seq, batch, feat)).astype(np.float32),
              "h0": rng.standard_normal((dirs, batch, hidden)).astype(np.float32),
              "c0": rng.standard_normal((dirs, batch, hidden)).astype(np.float32)}
    _check_against_onnxruntime(nodes, inputs, ["ly", "lh", "lc", "ly_b", "lh_b", "gy", "gh", "gy_lbr", "ry", "rh"], 17,
                               inits,
                               atol=1e-5)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_auto_pad_same_and_trailing_reflect_pad_match_onnxruntime(auto_pad: str) -> None:
    from onnx import helper

    rng = np.random.default_rng(6)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["conv"], auto_pad=auto_pad, strides=[2, 2], kernel_shape=[3, 4]),
             n("MaxPool", ["x"], ["max"], auto_pad=auto_pad, strides=[2, 3], kernel_shape=[3, 3]),
             n("AveragePool", ["x"], ["avg"], auto_pad=auto_pad, strides=[2, 2], kernel_shape=[2, 3]),
             n("AveragePool", ["x"], ["avg_incl"], auto_pad=auto_pad, strides=[2, 2], kernel_shape=[2, 3],
               count_include_pad=1),
             n("Reshape", ["x", "flat"], ["x2d"]),
             n("Pad", ["x2d", "pads"], ["reflect"], mode="reflect"),
             n("Pad", ["x", "pads4"], ["edge"], mode="edge")]
    inits = (_const("w", rng.standard_normal((4, 3, 3, 4))), _const("flat", [3, -1], np.int64),
             _const("pads", [0, 5, 0, 3], np.int64), _const("pads4", [0, 0, 1, 2, 0, 0, 2, 0], np.int64))
    x = rng.standard_normal((1, 3, 7, 10)).astype(np.float32)
    _check_against_onnxruntime(nodes, {"x": x}, ["conv", "max", "avg", "avg_incl", "reflect", "edge"], 17, inits,
                               atol=1e-5)


def test_trainable_leaves_out_batchnorm_running_statistics_and_takes_override_modules() -> None:
    b = Builder((2, 3, 6, 6), "bn")
    stats = {k: b.g.add_constant(np.linspace(0.5, 1.5, 4).astype(np.float32), k)
             for k in ("scale", "bias", "mean", "var")}
    y = b.op("BatchNormalization", b.conv(b.x, 4, name="conv"), *stats.values(), name="bn")
    graph = b.done(b.gemm(b.op("Flatten", y, name="flat"), 5, name="fc"))
    module = to_torch(graph)
    params = {id(p) for p in module.trainable()}
    key = {name: module.params[k] for name, k in module._keys.items()}
    assert {id(key[n]) for n in ("scale", "bias")} <= params
    assert not {id(key[n]) for n in ("mean", "var")} & params
    assert len(params) == len(key) - 2  # conv and fc weights and biases, BN's scale and bias
    override = torch.nn.Linear(4 * 36, 5)
    with_module = to_torch(graph, modules={"fc": override})
    assert {id(p) for p in override.parameters()} <= {id(p) for p in with_module.trainable()}


def test_instance_norm_depth_space_moves_and_einsum_match_onnxruntime() -> None:
    """GroupNorm, InstanceNorm, PixelShuffle and einsum models compile for the analog target (which
    runs through this emission); DepthToSpace in both modes, SpaceToDepth."""
    from onnx import helper

    n = helper.make_node
    x = np.random.default_rng(5).standard_normal((2, 8, 4, 6)).astype(np.float32)
    nodes = [n("InstanceNormalization", ["x", "scale", "bias"], ["inorm"], epsilon=1e-3),
             n("DepthToSpace", ["x"], ["dcr"], blocksize=2),
             n("DepthToSpace", ["x"], ["crd"], blocksize=2, mode="CRD"),
             n("SpaceToDepth", ["x"], ["s2d"], blocksize=2),
             n("Einsum", ["x", "x"], ["gram"], equation="bchw,bdhw->bcd")]
    scale = np.random.default_rng(6).uniform(0.5, 1.5, 8)
    _check_against_onnxruntime(nodes, {"x": x}, ["inorm", "dcr", "crd", "s2d", "gram"], 17,
                               (_const("scale", scale), _const("bias", np.linspace(-1, 1, 8))), atol=1e-5)
