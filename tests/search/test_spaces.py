"""Search spaces: NAS-Bench-201 strings and networks, MobileNetV2 configs, lowering to the IR."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwnas.backends.emit.onnx import to_onnx
from hwnas.ir.graph import Graph
from hwnas.ir.verifier import verify
from hwnas.passes import PassRunner, parse_pipeline
from hwnas.search.spaces import (
    MBConfig,
    NB201Config,
    build_spec,
    mobilenetv2,
    nasbench201,
    sample_architectures,
    sample_specs,
    to_graph,
)

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
ALL_OPS = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """These forwards are tiny; a second intra-op thread only spins (seconds per test on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_arch_string_round_trip() -> None:
    for arch in (BEST, RESNET, ALL_OPS):
        cell = nasbench201.parse_arch(arch)
        assert nasbench201.format_arch(cell) == arch == str(cell)
        assert nasbench201.arch_from_index(nasbench201.arch_index(arch)) == arch
    assert nasbench201.parse_arch(BEST).edge(1, 2) == "avg_pool_3x3"


@pytest.mark.parametrize("bad", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|",  # two nodes
    "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # unknown op
    "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",  # wrong source node
    "|none~0|+|none~0|+|none~0|none~1|none~2|",  # too few edges
])
def test_bad_arch_strings_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        nasbench201.parse_arch(bad)


def test_enumeration_covers_every_cell_once() -> None:
    archs = [nasbench201.arch_from_index(i) for i in range(nasbench201.NUM_ARCHS)]
    assert len(archs) == len(set(archs)) == 15_625
    assert set(archs) == set(nasbench201.all_archs())
    assert all(nasbench201.arch_index(archs[i]) == i for i in range(0, 15_625, 97))
    with pytest.raises(IndexError):
        nasbench201.arch_from_index(15_625)


def _nb201_params(cell: str, c: int, n: int = 5, classes: int = 10) -> int:
    """Parameters counted from the layer shapes: conv weights (no bias) and BN scale + shift."""
    kernels = [{"nor_conv_1x1": 1, "nor_conv_3x3": 3}.get(op, 0) for op in nasbench201.parse_arch(cell).ops]

    def per_cell(ch: int) -> int:  # a k x k conv and its BN per conv edge; pool, skip and none have none
        return sum(k * k * ch * ch + 2 * ch for k in kernels if k)

    def reduction(ci: int, co: int) -> int:  # conv_a 3x3 s2 + BN, conv_b 3x3 + BN, 1x1 shortcut conv
        return 9 * ci * co + 2 * co + 9 * co * co + 2 * co + ci * co
    stem = 9 * 3 * c + 2 * c
    cells = n * (per_cell(c) + per_cell(2 * c) + per_cell(4 * c))
    head = 2 * 4 * c + 4 * c * classes + classes  # last BN, classifier
    return stem + cells + reduction(c, 2 * c) + reduction(2 * c, 4 * c) + head


def test_nb201_parameter_counts() -> None:
    # ResNet-like cell at C=16: two 3x3 convs a cell. By hand: stem 464, cells 23,360 + 92,800 +
    # 369,920, reductions 14,464 + 57,600, head 128 + 650 = 559,386.
    assert _nb201_params(RESNET, 16) == 559_386
    assert n_params(nasbench201.build(RESNET)) == 559_386
    for arch, c in ((BEST, 16), (ALL_OPS, 32), (nasbench201.arch_from_index(0), 64)):
        assert n_params(nasbench201.build(arch, channels=c)) == _nb201_params(arch, c)


@pytest.mark.parametrize("channels", [16, 32, 64])
def test_nb201_runs_at_32x32(channels: int) -> None:
    net = nasbench201.build(BEST, channels=channels).eval()
    assert net.input_shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_mobilenetv2_default_is_torchvisions() -> None:
    net = mobilenetv2.build()
    assert n_params(net) == 3_504_872  # torchvision.models.mobilenet_v2(), 1000 classes
    blocks = [m for m in net.modules() if isinstance(m, mobilenetv2.InvertedResidual)]
    assert len(blocks) == 17 and sum(b.use_residual for b in blocks) == 10
    assert all(isinstance(m, nn.ReLU6) for m in net.modules() if isinstance(m, nn.ReLU | nn.ReLU6))


def test_mobilenetv2_sampled_configs_build_and_run() -> None:
    rng = random.Random(1)
    for _ in range(3):
        cfg = mobilenetv2.sample(rng, num_classes=10)
        cfg = MBConfig(cfg.width, cfg.depths, cfg.kernels, cfg.expansions, 64, 10)  # small input, fast
        net = mobilenetv2.build(cfg).eval()
        assert sum(isinstance(m, mobilenetv2.InvertedResidual) for m in net.modules()) == sum(cfg.depths)
        with torch.no_grad():
            assert net(torch.zeros(cfg.input_shape)).shape == (1, 10)
    with pytest.raises(ValueError):
        MBConfig(kernels=(3, 5, 9, 3, 3, 3, 3))


def test_sampling_is_deterministic_and_mixed() -> None:
    specs = sample_specs(40, seed=3)
    assert specs == sample_specs(40, seed=3) != sample_specs(40, seed=4)
    assert len({name for name, _ in specs}) == 40
    assert {type(s) for _, s in specs} == {NB201Config, MBConfig}
    assert {s.channels for _, s in specs if isinstance(s, NB201Config)} == {16, 32, 64}
    a, b = sample_architectures(3, seed=7), sample_architectures(3, seed=7)
    for (na, ma, sa), (nb, mb, sb) in zip(a, b, strict=True):
        assert na == nb and sa == sb
        assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True))


def _randomize_bn(module: nn.Module, seed: int) -> nn.Module:
    """Non-trivial running statistics, so that BN folding and the export are really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module.eval()


def _run(graph: Graph, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("spec", [
    NB201Config(ALL_OPS, channels=16),
    MBConfig(width=0.5, depths=(1, 2, 2, 3, 2, 2, 1), kernels=(3, 5, 7, 3, 5, 7, 3), expansions=(1, 4, 6, 3, 6, 4, 6),
             resolution=64, num_classes=10),
])
def test_to_graph_matches_torch_in_onnxruntime(spec: NB201Config | MBConfig) -> None:
    module = _randomize_bn(build_spec(spec, seed=0), seed=1)
    graph = to_graph(module, spec.input_shape, "net")
    verify(graph)
    assert graph.name == "net"
    x = np.random.default_rng(0).standard_normal((2, *spec.input_shape[1:])).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    canon = PassRunner().run(parse_pipeline("canonicalize"), graph).graph
    for g in (graph, canon):
        np.testing.assert_allclose(_run(g, x[:1]), expected[:1], atol=1e-4, rtol=1e-4)
