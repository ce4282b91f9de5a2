"""A joint architecture + compression space: any base space's candidate, plus per weight layer
a weight width and a channel-pruning ratio, applied by the `prune-channels` and `quantize`
passes so that the cost models price the candidate as they price any compressed model.

Layers are the network's Conv/Gemm nodes in graph order (slot i is the i-th); a base space
says how many a network of it can have at most (`max_layers`), and slots past a candidate's
last layer go unused, as do the pruning slots of layers whose channels follow another's.
Weight widths come from the target's integer datapaths (4 and 8 bits where it does not say,
as on analog crossbars), plus float; activations are quantized to 8 bits wherever weights are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from hwnas.backends.emit.qdq import BITS
from hwnas.backends.target import load_target
from hwnas.ir.graph import Graph
from hwnas.passes.channels import channel_groups
from hwnas.passes.prune_channels import PruneChannels
from hwnas.passes.quantize import quantizable, quantize_layers
from hwnas.search.spaces import Dim, Space, SpaceError

C = TypeVar("C")
FLOAT = 32
"""The weight-width choice that leaves a layer in float."""
RATIOS = (0.0, 0.25, 0.5)


@dataclass(frozen=True)
class Compressed(Generic[C]):
    """A base candidate with one weight width (FLOAT: none) and one pruning ratio per layer slot."""

    arch: C
    bits: tuple[int, ...]
    ratios: tuple[float, ...]


def weight_widths(target: str | None) -> tuple[int, ...]:
    """The weight widths the joint space offers on `target` (its integer datapaths the
    quantize pass supports, else 4 and 8), and FLOAT."""
    widths = load_target(target).integer_widths() if target else None
    return (*sorted(w for w in (widths or {4, 8}) if w in BITS), FLOAT)


class JointSpace(Space[Compressed[C]]):
    """`base`'s candidates with per-layer weight widths and channel-pruning ratios."""

    def __init__(self, base: Space[C], target: str | None = None, ratios: tuple[float, ...] = RATIOS) -> None:
        layers = getattr(base, "max_layers", None)
        if not isinstance(layers, int):
            raise SpaceError(f"space {base.name}: a joint space needs the base space's max_layers")
        self.base, self.layers, self.widths = base, layers, weight_widths(target)
        self.name = f"{base.name}-joint"
        self.dims = (*base.dims, *(Dim(f"bits{i}", self.widths) for i in range(layers)),
                     *(Dim(f"prune{i}", ratios) for i in range(layers)))

    def encode(self, candidate: Compressed[C]) -> np.ndarray:
        """The base vector, then each slot's width index, then each slot's ratio index."""
        n = len(self.base.dims)
        tail = [d.choices.index(v) for d, v in
                zip(self.dims[n:], (*candidate.bits, *candidate.ratios), strict=True)]
        return np.concatenate([self.base.encode(candidate.arch), np.array(tail, dtype=float)])

    def decode(self, vector: Sequence[float] | np.ndarray) -> Compressed[C]:
        """The base candidate of the first entries, the widths and ratios of the rest."""
        idx, n = self.indices(vector), len(self.base.dims)
        values = [d.choices[i] for d, i in zip(self.dims[n:], idx[n:], strict=True)]
        return Compressed(self.base.decode(idx[:n]), tuple(values[:self.layers]),  # type: ignore[arg-type]
                          tuple(values[self.layers:]))  # type: ignore[arg-type]

    def build_ir(self, candidate: Compressed[C], seed: int = 0) -> Graph:
        """The base network, pruned (prune-channels, given ratios; warnings per layer that keeps
        more than asked) then quantized (the quantize pass's calibration on 4 random inputs drawn
        from `seed`)."""
        graph = self.base.build_ir(candidate.arch, seed)
        layers = [n.name for n in graph.nodes if quantizable(n)]
        if len(layers) > self.layers:
            raise SpaceError(f"space {self.name}: the network has {len(layers)} weight layers, max_layers is "
                             f"{self.layers}")
        # A layer whose filters follow another's (a depthwise conv after its expansion) prunes with
        # that layer; its own slot's ratio goes unused.
        groups = channel_groups(graph)
        prunable = {g.name for g in groups} | {s for g in groups for s in g.sources}
        ratios = ";".join(f"{name}={r}" for name, r in zip(layers, candidate.ratios, strict=False)
                          if r > 0 and name in prunable)
        if ratios:
            graph = PruneChannels(ratios=ratios).run(graph).graph
        bits = {name: (b, 8) for name, b in zip(layers, candidate.bits, strict=False) if b != FLOAT}
        if bits:
            rng = np.random.default_rng(seed)
            calib = {v.name: rng.standard_normal((4, *v.type.static_shape[1:])).astype(np.float32)
                     for v in graph.inputs if v.type is not None and v.type.static_shape is not None}
            quantize_layers(graph, bits, calib=calib)
        return graph
