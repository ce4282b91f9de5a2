"""The spaces' contract (sample, mutate, encode, decode, key, build_ir), the IR they build
directly against what the torch frontend makes of the same networks, and the joint space's
compression through the quantize and prune-channels passes."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.backends.cost import estimate
from hwnas.backends.emit import emit_onnx
from hwnas.backends.sessions import session
from hwnas.backends.target import load_target
from hwnas.ir.graph import Graph
from hwnas.search.spaces import NB201Config, SpaceError, build_spec, make_space, space_names, to_graph
from hwnas.search.spaces.joint import FLOAT, Compressed, weight_widths
from hwnas.search.spaces.mobilenetv2 import MBConfig
from hwnas.search.spaces.nasbench201 import parse_arch
from hwnas.search.spaces.nb201 import NB201Space

# Cells whose edges share a source: the torch exporter merges their ReLUs, pools and x*0.
CELLS = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|",
         "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|",
         "|skip_connect~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~1|none~2|")


@pytest.mark.parametrize("name", ["nb201", "mbv2"])
def test_contract_round_trips(name: str) -> None:
    space = make_space(name)
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = space.sample(rng)
        v = space.encode(c)
        assert v.shape == (len(space.dims),) and v.dtype == float
        assert space.decode(v) == c and space.parse(space.key(c)) == c
        m = space.mutate(c, rng)
        assert int(np.sum(space.encode(m) != v)) == 1
    # Any real vector decodes: rounded, clipped into each dimension's choices.
    wild = space.decode(np.full(len(space.dims), 99.7))
    assert np.array_equal(space.encode(wild), [len(d) - 1 for d in space.dims])
    with pytest.raises(SpaceError, match="entries"):
        space.decode([0.0])


def test_unknown_space_is_refused() -> None:
    with pytest.raises(SpaceError, match="unknown search space 'nb301'.*nb201"):
        make_space("nb301")
    assert set(space_names()) >= {"nb201", "mbv2", "nb201-joint", "mbv2-joint"}


def _node_keys(g: Graph) -> list[tuple]:
    return [(n.op, dict(n.attrs), [v.type.shape if v is not None and v.type else None for v in n.inputs],
             [v.type.shape if v.type else None for v in n.outputs]) for n in g.nodes]


def _same_function(traced: Graph, direct: Graph) -> None:
    """Give the traced graph `direct`'s weights (node by node, input by input: He-scaled, so the
    output is far from 0), then both must compute the same outputs in onnxruntime."""
    for a, b in zip(traced.nodes, direct.nodes, strict=True):
        for va, vb in zip(a.inputs, b.inputs, strict=True):
            if va is not None and vb is not None and va.const is not None:
                assert vb.const is not None and vb.const.shape == va.const.shape
                va.const = vb.const
        if a.op == "Constant":
            assert b.attrs["value"] == a.attrs["value"]
    x = np.random.default_rng(0).standard_normal(traced.inputs[0].type.static_shape).astype(np.float32)
    ya = session(emit_onnx(traced)).run(None, {traced.inputs[0].name: x})[0]
    yb = session(emit_onnx(direct)).run(None, {direct.inputs[0].name: x})[0]
    assert np.abs(ya).max() > 1e-3  # the networks compute something
    np.testing.assert_allclose(yb, ya, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", CELLS)
def test_nb201_ir_equals_the_torch_path(arch: str) -> None:
    spec = NB201Config(arch, channels=8)
    traced = to_graph(build_spec(spec, seed=1), spec.input_shape, "traced")
    direct = NB201Space(channels=8).build_ir(parse_arch(arch), seed=3)
    assert _node_keys(direct) == _node_keys(traced)
    _same_function(traced, direct)


def test_mobilenetv2_ir_equals_the_torch_path() -> None:
    config = MBConfig(width=0.35, depths=(1, 2, 2, 1, 1, 1, 1), kernels=(3, 5, 7, 3, 3, 5, 3),
                      expansions=(1, 3, 6, 4, 3, 3, 6), resolution=64, num_classes=10)
    traced = to_graph(build_spec(config, seed=1), config.input_shape, "traced")
    direct = make_space("mbv2").build_ir(config, seed=3)
    assert _node_keys(direct) == _node_keys(traced)
    _same_function(traced, direct)


def test_joint_space_compresses_through_the_passes() -> None:
    space = make_space("nb201-joint", "cortex-m7")
    widths = load_target("cortex-m7").integer_widths() or set()
    assert weight_widths("cortex-m7") == (*sorted(widths), FLOAT)
    arch = parse_arch(CELLS[0])
    n = space.base.max_layers  # type: ignore[attr-defined]
    bits = (8, 4, *(FLOAT,) * (n - 2)) if 4 in widths else (8, 8, *(FLOAT,) * (n - 2))
    ratios = (0.0, 0.5, *(0.0,) * (n - 2))
    candidate = Compressed(arch, bits, ratios)
    assert space.decode(space.encode(candidate)) == candidate
    plain = space.base.build_ir(arch)
    graph = space.build_ir(candidate)
    layers = [m for m in graph.nodes if m.op in ("Conv", "Gemm")]
    assert [q.w_bits if (q := m.ann.quant) else None for m in layers[:3]] == [bits[0], bits[1], None]
    # The second conv (the cell's first 3x3) lost half its filters; the float one did not.
    w_plain = [m.input(1).const.shape[0] for m in plain.nodes if m.op == "Conv"]
    w_joint = [m.input(1).const.shape[0] for m in layers if m.op == "Conv"]
    assert w_joint[1] == w_plain[1] // 2 and w_joint[0] == w_plain[0]
    cheap, full = estimate(graph, "cortex-m7"), estimate(plain, "cortex-m7")
    assert cheap.weight_bytes < full.weight_bytes
