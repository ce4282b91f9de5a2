"""A joint architecture + compression space: any base space's candidate, plus per weight layer
a weight width and a channel-pruning ratio, applied by the `prune-channels` and `quantize`
passes so that the cost models price the candidate as they price any compressed model.

Layers are the network's Conv/Gemm nodes in graph order (slot i is the i-th); a base space
says how many a network of it can have at most (`max_layers`), and slots past a candidate's
last layer go unused, as do the pruning slots of layers whose channels follow another's.
Weight widths come from the target's integer datapaths (4 and 8 bits where it does not say,
as on analog crossbars), plus float; activations are quantized to 8 bits wherever weights are.

On an analog target (or with `placement=True`) each slot also chooses analog or digital: the
`map-analog` pass places the network on the target's tiles and the layers chosen digital get a
digital `Placement` (their tiles freed, the analog layers' tile ids renumbered without gaps),
so the analog cost model prices each side and counts the tiles, and the `analog_noise` metric
counts only the analog layers' errors.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from hwnas.backends.emit.qdq import BITS
from hwnas.backends.target import load_target
from hwnas.ir.annotations import Placement
from hwnas.ir.graph import Graph
from hwnas.passes.channels import channel_groups
from hwnas.passes.map_analog import MapAnalog
from hwnas.passes.prune_channels import PruneChannels
from hwnas.passes.quantize import quantizable, quantize_layers
from hwnas.search.spaces import Dim, Space, SpaceError

C = TypeVar("C")
FLOAT = 32
"""The weight-width choice that leaves a layer in float."""
RATIOS = (0.0, 0.25, 0.5)
SIDES = ("analog", "digital")
"""The placement choices of a slot (analog first: the all-zero vector is map-analog's own placement)."""


@dataclass(frozen=True)
class Compressed(Generic[C]):
    """A base candidate with one weight width (FLOAT: none) and one pruning ratio per layer slot,
    and where the space places layers, one side of `SIDES` per slot."""

    arch: C
    bits: tuple[int, ...]
    ratios: tuple[float, ...]
    sides: tuple[str, ...] = ()


def weight_widths(target: str | None) -> tuple[int, ...]:
    """The weight widths the joint space offers on `target` (its integer datapaths the
    quantize pass supports, else 4 and 8), and FLOAT."""
    widths = load_target(target).integer_widths() if target else None
    return (*sorted(w for w in (widths or {4, 8}) if w in BITS), FLOAT)


class JointSpace(Space[Compressed[C]]):
    """`base`'s candidates with per-layer weight widths and channel-pruning ratios, and per-layer
    analog/digital placement when `placement` (default: when `target` is an analog target)."""

    def __init__(self, base: Space[C], target: str | None = None, ratios: tuple[float, ...] = RATIOS,
                 placement: bool | None = None) -> None:
        layers = getattr(base, "max_layers", None)
        if not isinstance(layers, int):
            raise SpaceError(f"space {base.name}: a joint space needs the base space's max_layers")
        self.base, self.layers, self.widths = base, layers, weight_widths(target)
        self.target = target
        analog = target is not None and load_target(target).kind == "analog"
        self.placement = analog if placement is None else placement
        if self.placement and not analog:
            raise SpaceError(f"space {base.name}-joint: placing layers analog or digital needs an analog target, "
                             f"not {target or 'none'}")
        self.name = f"{base.name}-joint"
        self.dims = (*base.dims, *(Dim(f"bits{i}", self.widths) for i in range(layers)),
                     *(Dim(f"prune{i}", ratios) for i in range(layers)),
                     *(Dim(f"side{i}", SIDES) for i in range(layers if self.placement else 0)))

    def encode(self, candidate: Compressed[C]) -> np.ndarray:
        """The base vector, then each slot's width index, each slot's ratio index, and each slot's side
        (when the space places layers)."""
        n = len(self.base.dims)
        sides = (candidate.sides or (SIDES[0],) * self.layers) if self.placement else ()
        tail = [d.choices.index(v) for d, v in
                zip(self.dims[n:], (*candidate.bits, *candidate.ratios, *sides), strict=True)]
        return np.concatenate([self.base.encode(candidate.arch), np.array(tail, dtype=float)])

    def decode(self, vector: Sequence[float] | np.ndarray) -> Compressed[C]:
        """The base candidate of the first entries, the widths, ratios (and sides) of the rest."""
        idx, n, k = self.indices(vector), len(self.base.dims), self.layers
        values = [d.choices[i] for d, i in zip(self.dims[n:], idx[n:], strict=True)]
        return Compressed(self.base.decode(idx[:n]), tuple(values[:k]), tuple(values[k:2 * k]),  # type: ignore[arg-type]
                          tuple(values[2 * k:]))  # type: ignore[arg-type]

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
        if self.placement:
            self._place(graph, {name for name, side in zip(layers, candidate.sides, strict=False) if side != "analog"})
        return graph

    def _place(self, graph: Graph, digital: set[str]) -> None:
        """map-analog's placement on the space's target, with the `digital` layers on the digital core."""
        assert self.target is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a search builds thousands; the placements say it all
            plan = MapAnalog(target=self.target).plan(graph)
        first = 0
        for node in graph.nodes:
            p = plan.placements.get(node.name)
            if p is None:
                continue
            if node.name in digital and p.analog:
                p = Placement(p.target, analog=False, reason="joint space: placed on the digital core")
            elif p.analog:  # the tiles of the layers before it that went digital are free
                shift = first - min(p.tile_ids)
                p = dataclasses.replace(p, tile_ids=tuple(t + shift for t in p.tile_ids),
                                        blocks=tuple((b[0] + shift, *b[1:]) for b in p.blocks))
                first += len(p.tile_ids)
            node.ann.placement = p
