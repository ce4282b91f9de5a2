"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020) as torch modules.

A cell is a 4-node DAG; each of its 6 edges (i -> j, i < j) picks one of five ops, written
as "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|" (node 1's input edges, then node 2's, then node 3's).
The network follows the paper's code (xautodl `TinyNetwork` and `InferCell`): stem conv3x3 +
BN, three stages of `num_cells` cells at C, 2C, 4C channels with a residual reduction block
between stages, then BN-ReLU, global average pooling and a linear classifier. `none` edges
stay in the graph as a multiplication by zero, as in the paper's networks, so that a
measured or priced network is the one the benchmark trained.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from torch import nn

from hwnas.ir.graph import Graph, Value
from hwnas.search.spaces.ir_build import IRBuilder

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
EDGES = tuple((i, j) for j in range(1, NUM_NODES) for i in range(j))
"""The 6 edges (from, to) in the order the arch string lists them."""
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625


@dataclass(frozen=True)
class Cell:
    """One op name per edge, in `EDGES` order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, not {len(self.ops)}")
        bad = [op for op in self.ops if op not in OPS]
        if bad:
            raise ValueError(f"unknown NAS-Bench-201 op '{bad[0]}' (known: {', '.join(OPS)})")

    def edge(self, src: int, dst: int) -> str:
        """The op on the edge from node `src` to node `dst`."""
        return self.ops[EDGES.index((src, dst))]

    def __str__(self) -> str:
        return format_arch(self)


def parse_arch(text: str) -> Cell:
    """Parse "|nor_conv_3x3~0|+|...|" into a Cell; the inverse of `format_arch`."""
    nodes = text.strip().split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ValueError(f"'{text}': a NAS-Bench-201 arch has {NUM_NODES - 1} nodes separated by '+'")
    ops: list[str] = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"'{text}': node {j} must be written '|op~i|...|'")
        edges = node[1:-1].split("|")
        if len(edges) != j:
            raise ValueError(f"'{text}': node {j} must have {j} input edges, not {len(edges)}")
        for i, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            if not sep or src != str(i):
                raise ValueError(f"'{text}': edge '{edge}' of node {j} must read 'op~{i}'")
            ops.append(op)
    return Cell(tuple(ops))


def format_arch(cell: Cell) -> str:
    """The cell as an arch string; `parse_arch` reads it back."""
    nodes = []
    for j in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{cell.edge(i, j)}~{i}" for i in range(j)) + "|")
    return "+".join(nodes)


def arch_from_index(index: int) -> str:
    """The index-th arch string (0 <= index < 15,625): the edge ops as base-5 digits, first edge
    most significant. Deterministic, but not the official NAS-Bench-201 ordering."""
    if not 0 <= index < NUM_ARCHS:
        raise IndexError(f"NAS-Bench-201 index {index} out of range [0, {NUM_ARCHS})")
    digits = []
    for _ in EDGES:
        index, d = divmod(index, len(OPS))
        digits.append(d)
    return format_arch(Cell(tuple(OPS[d] for d in reversed(digits))))


def arch_index(arch: str | Cell) -> int:
    """The inverse of `arch_from_index`."""
    cell = parse_arch(arch) if isinstance(arch, str) else arch
    index = 0
    for op in cell.ops:
        index = index * len(OPS) + OPS.index(op)
    return index


def all_archs() -> list[str]:
    """All 15,625 arch strings, in `arch_from_index` order."""
    return [format_arch(Cell(ops)) for ops in product(OPS, repeat=len(EDGES))]


def sample(rng: random.Random | np.random.Generator) -> str:
    """A uniformly random arch string."""
    if isinstance(rng, np.random.Generator):
        return arch_from_index(int(rng.integers(NUM_ARCHS)))
    return arch_from_index(rng.randrange(NUM_ARCHS))


class ReLUConvBN(nn.Sequential):
    """ReLU, Conv (no bias, padding keeps the size at stride 1), BatchNorm: the benchmark's conv op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        super().__init__(nn.ReLU(), conv, nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    """The `none` op: the paper's networks keep it as x * 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """The module of one edge op; ValueError for a name not in `OPS`."""
    # Inside a cell every edge keeps channels and resolution (stride 1, C_in == C_out).
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op '{name}'")


class InferCell(nn.Module):
    """Node j is the sum of its input edges' ops; the cell's output is the last node."""

    def __init__(self, cell: Cell, channels: int) -> None:
        super().__init__()
        self.edges = list(EDGES)
        self.ops = nn.ModuleList(make_op(op, channels) for op in cell.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, NUM_NODES):
            terms = [op(nodes[i]) for (i, dst), op in zip(self.edges, self.ops, strict=True) if dst == j]
            out = terms[0]
            for t in terms[1:]:
                out = out + t
            nodes.append(out)
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """The reduction block between stages: two ReLU-Conv-BN (the first strided) plus an
    avg-pool + 1x1 conv shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    """The NAS-Bench-201 network (see the module docstring); `arch` and `input_shape` describe it."""

    def __init__(self, cell: Cell, channels: int = 16, num_cells: int = 5, num_classes: int = 10,
                 resolution: int = 32) -> None:
        super().__init__()
        self.arch = format_arch(cell)
        self.input_shape = (1, 3, resolution, resolution)
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResNetBasicBlock(c, 2 * c))
                c *= 2
            layers.extend(InferCell(cell, c) for _ in range(num_cells))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))


def build(arch: str | Cell, channels: int = 16, num_cells: int = 5, resolution: int = 32,
          num_classes: int = 10) -> TinyNetwork:
    """The NAS-Bench-201 network of `arch`. `resolution` only sets `input_shape` (the network
    is fully convolutional); it must survive the two stride-2 reductions."""
    cell = parse_arch(arch) if isinstance(arch, str) else arch
    if resolution < 4:
        raise ValueError(f"resolution {resolution} is too small for two stride-2 reductions")
    return TinyNetwork(cell, channels, num_cells, num_classes, resolution)


def _edge_ir(b: IRBuilder, op: str, x: Value, name: str) -> Value:
    if op == "none":
        return b.zero(x, name)
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return b.avg_pool(x, 3, 1, 1, name, count_include_pad=False)
    kernel = 3 if op == "nor_conv_3x3" else 1
    return b.conv(b.relu(x, f"{name}/{name.rsplit('/', 1)[-1]}.0"), _shape(x)[1], kernel, 1,
                  f"{name}/{name.rsplit('/', 1)[-1]}.1")


def _shape(v: Value) -> tuple[int, ...]:
    assert v.type is not None and v.type.static_shape is not None
    return v.type.static_shape


def cell_ir(b: IRBuilder, cell: Cell, x: Value, prefix: str) -> Value:
    """Append one cell reading `x` (the nodes `InferCell.forward` traces to, in its order)."""
    nodes, adds = [x], 0
    for j in range(1, NUM_NODES):
        terms = [_edge_ir(b, op, nodes[i], f"{prefix}/ops.{e}") for e, ((i, dst), op) in
                 enumerate(zip(EDGES, cell.ops, strict=True)) if dst == j]
        out = terms[0]
        for t in terms[1:]:
            out = b.add(out, t, f"{prefix}/Add" + (f"_{adds}" if adds else ""))
            adds += 1
        nodes.append(out)
    return nodes[-1]


def stem_ir(b: IRBuilder, x: Value, channels: int) -> Value:
    """The stem: conv3x3 with its BatchNorm folded."""
    return b.conv(x, channels, 3, 1, "/stem/stem.0")


def reduction_ir(b: IRBuilder, x: Value, index: int) -> Value:
    """`ResNetBasicBlock` doubling the channels and halving the resolution (module `cells.{index}`)."""
    p, c = f"/cells/cells.{index}", 2 * _shape(x)[1]
    short = b.conv(b.avg_pool(x, 2, 2, 0, f"{p}/downsample/downsample.0", count_include_pad=True), c, 1, 1,
                   f"{p}/downsample/downsample.1", bias=False)
    a = b.conv(b.relu(x, f"{p}/conv_a/conv_a.0"), c, 3, 2, f"{p}/conv_a/conv_a.1")
    y = b.conv(b.relu(a, f"{p}/conv_b/conv_b.0"), c, 3, 1, f"{p}/conv_b/conv_b.1")
    return b.add(short, y, f"{p}/Add")


def head_ir(b: IRBuilder, x: Value, num_classes: int) -> Value:
    """BatchNorm, ReLU, global average pooling and the classifier; the graph's output."""
    x = b.relu(b.batch_norm(x, "/lastact/lastact.0"), "/lastact/lastact.1")
    return b.classifier(x, num_classes, "/classifier")


def build_ir(arch: str | Cell, channels: int = 16, num_cells: int = 5, resolution: int = 32, num_classes: int = 10,
             seed: int = 0) -> Graph:
    """The network of `build` as IR, made directly (no tracing): the same nodes, in the same
    order and with the same shapes as `import_torch(build(...))`, with random weights from `seed`."""
    cell = parse_arch(arch) if isinstance(arch, str) else arch
    if resolution < 4:
        raise ValueError(f"resolution {resolution} is too small for two stride-2 reductions")
    b = IRBuilder(f"nb201-c{channels}-{arch_index(cell):05d}", (1, 3, resolution, resolution), seed)
    x, index = stem_ir(b, b.input, channels), 0
    for stage in range(3):
        if stage:
            x, index = reduction_ir(b, x, index), index + 1
        for _ in range(num_cells):
            x, index = cell_ir(b, cell, x, f"/cells/cells.{index}"), index + 1
    head_ir(b, x, num_classes)
    return b.graph
