"""The NAS-Bench-201 cell space as a `Space`: six edges, five ops each (15,625 cells).

A short, complete example of the contract: `dims` lists the choices, `encode`/`decode` map a
candidate to choice indices and back, `build_ir` makes the network. Copy it to write a space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnas.ir.graph import Graph
from hwnas.search.spaces import Dim, Space, SpaceError
from hwnas.search.spaces.nasbench201 import EDGES, OPS, Cell, arch_index, build_ir, format_arch, parse_arch


class NB201Space(Space[Cell]):
    """NAS-Bench-201 cells in the benchmark's network (`channels` wide, `num_cells` cells per
    stage, `resolution`-pixel inputs, CIFAR-10's 10 classes by default)."""

    name = "nb201"
    dims = tuple(Dim(f"edge{i}~{j}", OPS) for i, j in EDGES)

    def __init__(self, channels: int = 16, num_cells: int = 5, resolution: int = 32, num_classes: int = 10) -> None:
        self.channels, self.num_cells, self.resolution, self.num_classes = channels, num_cells, resolution, num_classes
        # Weight layers at most: the stem, a conv on every edge of every cell, 3 per reduction, the classifier.
        self.max_layers = 1 + 3 * num_cells * len(EDGES) + 2 * 3 + 1

    def encode(self, candidate: Cell) -> np.ndarray:
        """The index in `OPS` of each edge's op."""
        return np.array([OPS.index(op) for op in candidate.ops], dtype=float)

    def decode(self, vector: Sequence[float] | np.ndarray) -> Cell:
        """The cell whose edges take the ops the (rounded) indices name."""
        return Cell(tuple(OPS[i] for i in self.indices(vector)))

    def build_ir(self, candidate: Cell, seed: int = 0) -> Graph:
        """The NAS-Bench-201 network of the cell (`nasbench201.build_ir`)."""
        return build_ir(candidate, self.channels, self.num_cells, self.resolution, self.num_classes, seed)

    def key(self, candidate: Cell) -> str:
        """The arch string ("|nor_conv_3x3~0|+|...|")."""
        return format_arch(candidate)

    def parse(self, key: str) -> Cell:
        """The cell of an arch string."""
        try:
            return parse_arch(key)
        except ValueError as e:
            raise SpaceError(f"space nb201: {e}") from None

    def index(self, candidate: Cell) -> int:
        """The cell's index in 0..15,624 (`nasbench201.arch_index`)."""
        return arch_index(candidate)
