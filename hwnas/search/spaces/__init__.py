"""Search spaces: architecture generators that build torch modules, and their lowering to the IR.

Two spaces, as the design names them: the NAS-Bench-201 cell space (`nasbench201`) and a
layer-wise MobileNetV2-like macro space (`mobilenetv2`). `sample_architectures` mixes both
so that studies over "architectures" (cost-model rankings, cross-target agreement) see
cell-based and layer-wise networks alike.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.frontends.torch import import_torch
from hwnas.ir.graph import Graph
from hwnas.search.spaces import mobilenetv2, nasbench201
from hwnas.search.spaces.mobilenetv2 import MBConfig

__all__ = ["MBConfig", "NB201Config", "build_spec", "iter_architectures", "mobilenetv2", "nasbench201",
           "sample_architectures", "sample_specs", "to_graph"]

NB201_CHANNELS = (16, 32, 64)


@dataclass(frozen=True)
class NB201Config:
    """One NAS-Bench-201 network: the cell's arch string and the network's size."""

    arch: str
    channels: int = 16
    num_cells: int = 5
    resolution: int = 32
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """One RGB image at `resolution` (NCHW)."""
        return (1, 3, self.resolution, self.resolution)


Spec = NB201Config | MBConfig


def to_graph(module: nn.Module, input_shape: Sequence[int], name: str, seed: int = 0) -> Graph:
    """Lower `module` (put in eval mode) to the IR, traced on a random input drawn with `seed`."""
    module.eval()
    example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    # Tracing runs the network on one input; more intra-op threads only spin against each other
    # and against other work on a small machine (17x slower with 2 threads on 2 busy cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        graph = import_torch(module, example)
    finally:
        torch.set_num_threads(threads)
    graph.name = name
    return graph


def build_spec(spec: Spec, seed: int = 0) -> nn.Module:
    """The module of a spec, its weights drawn from `seed` without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(spec, NB201Config):
            return nasbench201.build(spec.arch, spec.channels, spec.num_cells, spec.resolution, spec.num_classes)
        return mobilenetv2.build(spec)


def sample_specs(n: int, seed: int) -> list[tuple[str, Spec]]:
    """`n` (name, spec) pairs, half NB201 (C = 16/32/64 at 32x32) and half MobileNetV2-like in
    expectation; deterministic given `seed`. Names are unique (they start with the draw's index)."""
    rng = random.Random(seed)
    out: list[tuple[str, Spec]] = []
    for i in range(n):
        spec: Spec
        if rng.random() < 0.5:
            channels = NB201_CHANNELS[rng.randrange(len(NB201_CHANNELS))]
            spec = NB201Config(nasbench201.sample(rng), channels)
            name = f"{i:03d}-nb201-c{channels}-{nasbench201.arch_index(spec.arch):05d}"
        else:
            spec = mobilenetv2.sample(rng)
            name = f"{i:03d}-{spec.name}"
        out.append((name, spec))
    return out


def iter_architectures(n: int, seed: int) -> Iterator[tuple[str, nn.Module, tuple[int, ...]]]:
    """The triples of `sample_architectures`, built one at a time (hundreds of MobileNets held
    at once take gigabytes)."""
    for i, (name, spec) in enumerate(sample_specs(n, seed)):
        yield name, build_spec(spec, seed * 100_003 + i), spec.input_shape


def sample_architectures(n: int, seed: int) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """`n` (name, module, input_shape) triples from `sample_specs`; each module's weights are
    seeded from `seed` and its index, so the same call gives the same networks."""
    return list(iter_architectures(n, seed))
