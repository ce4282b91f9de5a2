"""`map-analog`: places the weight layers of a graph on the crossbar tiles of an analog target
and records each placement (`Placement` annotations) for the analog cost model, the HTML
dump and the aihwkit simulation (`hwnas.analog`) to read."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Literal

from hwnas.backends.cost.analog import RECURRENT_OPS, layer_blocks
from hwnas.backends.target import Analog, load_target
from hwnas.errors import PipelineError
from hwnas.ir.annotations import Placement
from hwnas.ir.graph import Graph
from hwnas.passes.base import Pass, PassResult, register_pass

LAYER_OPS = ("Conv", "Gemm", "MatMul", *RECURRENT_OPS)


@dataclass
class AnalogMap:
    """What `map-analog` decided: a placement per weight layer (analog or digital with its reason)."""

    target: str
    tile_rows: int
    tile_cols: int
    chip_tiles: int
    placements: dict[str, Placement] = field(default_factory=dict)
    ops: dict[str, str] = field(default_factory=dict)

    @property
    def tiles(self) -> int:
        """Tiles the analog layers take together."""
        return sum(p.tiles or 0 for p in self.placements.values() if p.analog)

    @property
    def digital(self) -> dict[str, str]:
        """Layers left on the digital core, with the reason."""
        return {name: p.reason for name, p in self.placements.items() if not p.analog}

    def summary(self) -> str:
        """One line: layers on tiles, tiles used of the chip's, and each digital layer with its reason."""
        analog = len(self.placements) - len(self.digital)
        line = (f"{analog} of {len(self.placements)} weight layers on {self.tiles} of {self.chip_tiles} "
                f"{self.tile_rows}x{self.tile_cols} tiles")
        if self.tiles > self.chip_tiles:
            line += " (does not fit the chip)"
        if self.digital:
            line += "; digital: " + "; ".join(f"'{n}' ({self.ops[n]}): {why}" for n, why in self.digital.items())
        return line


@register_pass
@dataclass(frozen=True)
class MapAnalog(Pass):
    """Places every Conv, Gemm, MatMul and recurrent layer (LSTM, GRU, RNN) with constant weights
    on crossbar tiles of `target` (tile size and count from its [analog] section unless
    `tile_rows`, `tile_cols`, `tiles` are given): a layer's matrix (rows = Cin/group·kh·kw,
    columns = Cout/group) is split over as many tiles as it needs, its partial sums added on the
    digital core; depthwise and grouped filters are packed block-diagonally; a recurrent layer's
    W and R, per direction, on tiles of their own. Each layer gets a `Placement` with its tile ids and the
    row/column range of each block. A layer that cannot go analog (weights computed at run
    time, a batched MatMul, more tiles than the chip has) stays digital with its reason, in one
    warning. `fill=all` places every layer that fits the chip alone (the analog cost model then
    says whether all fit together); `fill=budget` places them in graph order until the chip's
    tiles are spent and leaves the rest digital. Exact: it only annotates."""

    name = "map-analog"
    target: str = "analog-pcm"
    tile_rows: int = 0
    tile_cols: int = 0
    tiles: int = 0
    fill: Literal["all", "budget"] = "all"

    def __post_init__(self) -> None:
        for opt in ("tile_rows", "tile_cols", "tiles"):
            if getattr(self, opt) < 0:
                raise ValueError(f"{opt} must be positive (0: the target's), not {getattr(self, opt)}")
        if self.fill not in ("all", "budget"):
            raise ValueError(f"fill must be all or budget, not {self.fill!r}")

    def hardware(self) -> Analog:
        """The target's analog section with this pass's tile size and count."""
        hw = load_target(self.target).section(Analog)
        return dataclasses.replace(hw, tile_rows=self.tile_rows or hw.tile_rows,
                                   tile_cols=self.tile_cols or hw.tile_cols, tiles=self.tiles or hw.tiles)

    def plan(self, graph: Graph) -> AnalogMap:
        """The placements this pass would make on `graph` (it does not change the graph)."""
        hw = self.hardware()
        plan = AnalogMap(self.target, hw.tile_rows, hw.tile_cols, hw.tiles)
        needs: dict[str, int] = {}
        blocks: dict[str, list[tuple[int, ...]]] = {}
        for n in graph.nodes:
            if n.op not in LAYER_OPS or n.domain:
                continue
            plan.ops[n.name] = n.op
            b = layer_blocks(n, hw)
            if isinstance(b, str):
                plan.placements[n.name] = self._digital(b)
            elif (need := 1 + max(block[0] for block in b)) > hw.tiles:
                plan.placements[n.name] = self._digital(f"needs {need} tiles of {hw.tile_rows}x{hw.tile_cols}, "
                                                        f"the chip has {hw.tiles}")
            else:
                needs[n.name], blocks[n.name] = need, b
        too_big = [p.reason for p in plan.placements.values() if p.reason.startswith("needs ")]
        if too_big and not needs:
            smallest = min(int(r.split()[1]) for r in too_big)
            raise PipelineError(f"{self.name}: no layer of graph '{graph.name}' fits {hw.tiles} tiles of "
                                f"{hw.tile_rows}x{hw.tile_cols} (the smallest needs {smallest})")
        first = 0
        for n in graph.nodes:
            if n.name not in needs:
                continue
            need = needs[n.name]
            if self.fill == "budget" and first + need > hw.tiles:
                plan.placements[n.name] = self._digital(f"the chip's {hw.tiles} tiles are spent ({first} used, "
                                                        f"it needs {need})")
                continue
            plan.placements[n.name] = self._analog(blocks[n.name], hw, first)
            first += need
        return plan

    def run(self, graph: Graph) -> PassResult:
        plan = self.plan(graph)
        changed = False
        for n in graph.nodes:
            p = plan.placements.get(n.name)
            if p is not None and n.ann.placement != p:
                n.ann.placement, changed = p, True
        if changed:  # said once: a second run on its own output has nothing new to say
            warnings.warn(f"{self.name}: {plan.summary()}", stacklevel=2)
        return PassResult(graph, changed)

    def _digital(self, reason: str) -> Placement:
        return Placement(self.target, analog=False, reason=reason)

    def _analog(self, blocks: list[tuple[int, ...]], hw: Analog, first: int) -> Placement:
        """Tiles `first` on for a layer's `blocks` (numbered from 0)."""
        placed = tuple((first + b[0], *b[1:]) for b in blocks)
        ids = tuple(sorted({b[0] for b in placed}))
        assert ids == tuple(range(first, first + len(ids)))
        return Placement(self.target, analog=True, tiles=len(ids), tile_rows=hw.tile_rows, tile_cols=hw.tile_cols,
                         tile_ids=ids, blocks=placed)
