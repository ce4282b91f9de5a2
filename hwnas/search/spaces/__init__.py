"""Search spaces: what a search proposes, as a vector an optimizer can handle and as IR.

Every space is a `Space`: a fixed list of categorical dimensions (`dims`), and five methods,
`sample`, `mutate`, `encode` (a candidate as a float vector of one entry per dimension, the
index of its choice), `decode` (the inverse; any real vector rounds to a valid candidate) and
`build_ir` (the candidate's network as hwnas IR, built directly, with no torch tracing), plus
`key`/`parse` (a candidate as stable text, for study storage). A space of your own subclasses
`Space`, lists its `dims` and writes `decode`, `encode` and `build_ir`; sampling and
mutation come with the base class. `spaces/nb201.py` (about 50 lines) is the one to copy.

Spaces: `NB201Space` (the NAS-Bench-201 cell), `MobileNetV2Space` (layer-wise macro: per stage
depth, kernel and expansion; width; resolution) and `JointSpace` (either one plus per-layer
weight bits and channel-pruning ratios, applied by the `quantize` and `prune-channels` passes).
`make_space("nb201")` gives one by name.

The older helpers below build torch modules: `sample_architectures` mixes both architecture
families so that studies over "architectures" (cost-model rankings, cross-target agreement)
see cell-based and layer-wise networks alike.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.frontends.torch import import_torch
from hwnas.ir.graph import Graph
from hwnas.search.spaces import mobilenetv2, nasbench201
from hwnas.search.spaces.mobilenetv2 import MBConfig

__all__ = ["Dim", "MBConfig", "NB201Config", "Space", "SpaceError", "build_spec", "iter_architectures", "make_space",
           "mobilenetv2", "nasbench201", "sample_architectures", "sample_specs", "space_names", "to_graph"]

C = TypeVar("C")


class SpaceError(HwnasError):
    """An unknown space, or a candidate or vector that does not belong to the space."""


@dataclass(frozen=True)
class Dim:
    """One categorical dimension of a space: its name and its choices, in encoding order."""

    name: str
    choices: tuple[object, ...]

    def __len__(self) -> int:
        return len(self.choices)


class Space(ABC, Generic[C]):
    """A search space of candidates `C` (see the module doc). Subclasses set `name` and `dims`
    and implement `encode`, `decode` and `build_ir`."""

    name: str = ""
    dims: tuple[Dim, ...] = ()

    @abstractmethod
    def encode(self, candidate: C) -> np.ndarray:
        """The candidate as `len(dims)` floats, each the index of its choice in that dimension."""

    @abstractmethod
    def decode(self, vector: Sequence[float] | np.ndarray) -> C:
        """The candidate of a vector; entries are rounded and clipped to valid choice indices."""

    @abstractmethod
    def build_ir(self, candidate: C, seed: int = 0) -> Graph:
        """The candidate's network as IR (random weights drawn from `seed`)."""

    def key(self, candidate: C) -> str:
        """Stable text naming the candidate (what a study stores); `parse` reads it back."""
        return ",".join(str(int(i)) for i in self.encode(candidate))

    def parse(self, key: str) -> C:
        """The candidate `key` names."""
        try:
            return self.decode([float(x) for x in key.split(",")])
        except ValueError as e:
            raise SpaceError(f"space {self.name}: '{key}' is not a candidate key ({e})") from None

    def indices(self, vector: Sequence[float] | np.ndarray) -> list[int]:
        """A vector's entries as valid choice indices (rounded, clipped); SpaceError on a wrong length."""
        v = np.asarray(vector, dtype=float).ravel()
        if v.shape != (len(self.dims),):
            raise SpaceError(f"space {self.name}: a vector has {len(self.dims)} entries, not {v.size}")
        return [int(min(max(round(x), 0), len(d) - 1)) if np.isfinite(x) else 0
                for x, d in zip(v, self.dims, strict=True)]

    def sample(self, rng: np.random.Generator) -> C:
        """A candidate drawn uniformly over the vector's choices."""
        return self.decode([float(rng.integers(len(d))) for d in self.dims])

    def mutate(self, candidate: C, rng: np.random.Generator) -> C:
        """The candidate with one dimension (drawn uniformly) set to another of its choices."""
        v = self.encode(candidate).copy()
        movable = [i for i, d in enumerate(self.dims) if len(d) > 1]
        i = movable[int(rng.integers(len(movable)))]
        v[i] = (v[i] + 1 + rng.integers(len(self.dims[i]) - 1)) % len(self.dims[i])
        return self.decode(v)

    @property
    def size(self) -> int:
        """The number of distinct vectors (candidates may repeat where dimensions go unused)."""
        return int(np.prod([len(d) for d in self.dims], dtype=object))

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


def space_names() -> list[str]:
    """The names `make_space` knows."""
    return ["nb201", "mbv2", "nb201-joint", "mbv2-joint"]


def make_space(name: str, target: str | None = None) -> Space:
    """The space called `name` (see `space_names`); the joint spaces take their weight widths
    from `target`'s integer datapaths. SpaceError for an unknown name."""
    from hwnas.search.spaces.joint import JointSpace
    from hwnas.search.spaces.mbv2 import MobileNetV2Space
    from hwnas.search.spaces.nb201 import NB201Space

    base: Space
    if name.removesuffix("-joint") == "nb201":
        base = NB201Space()
    elif name.removesuffix("-joint") == "mbv2":
        base = MobileNetV2Space()
    else:
        raise SpaceError(f"unknown search space '{name}' (known: {', '.join(space_names())})")
    return JointSpace(base, target) if name.endswith("-joint") else base
