"""The int8 grid of every run-time tensor of a quantized graph, and fixed-point multipliers.

A grid is (scale, zero point) as the QDQ emission writes it: uint8 zero points in 0..255.
The C code stores int8, the same integers shifted by 128 (`int8_zero_point`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from hwnas.backends.emit.qdq import GRID_PRESERVING, output_tensor, tensor_grids
from hwnas.errors import UnsupportedModelError
from hwnas.ir.graph import Graph, Value

Grid = tuple[float, int]
SOFTMAX_GRID: Grid = (1.0 / 256.0, 0)
"""A float Softmax output's grid (TFLite's: probabilities in steps of 1/256)."""
BACKWARD = frozenset({"Relu", "Clip", "Concat", *GRID_PRESERVING})
"""Ops whose output grid a float input may take (see `value_grids`)."""


class CodegenError(UnsupportedModelError):
    """The C backend cannot translate the model; the message names the node and why."""


def int8_zero_point(grid: Grid) -> int:
    """The zero point of the grid in the int8 storage the C code uses."""
    return grid[1] - 128


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = mult * 2^(shift - 31), mult a Q31 integer in
    [2^30, 2^31); (0, 0) below 2^-31."""
    if real <= 0 or real < 2.0**-31:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = round(q * (1 << 31))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift > 30:
        raise ValueError(f"multiplier {real:g} is too large for a Q31 requantization")
    return int(fixed), int(shift)


def value_grids(graph: Graph, given: Mapping[str, Grid]) -> dict[str, Grid]:
    """Value name -> grid for every tensor the QDQ form puts on an 8-bit grid: the grids the
    emitter inserts (`tensor_grids`), the data inputs of 8-bit quantized nodes, quantized
    nodes' output grids, then `given` (graph outputs left float). A tensor the QDQ form
    leaves float whose only reader is a Relu, Clip, Concat or an op that moves values
    (MaxPool, Flatten, ...) takes that reader's output grid: quantizing commutes with moving
    values, and clamping to the grid then at the zero point is the activation followed by
    quantizing. So the C code rounds where onnxruntime rounds, once, at the next grid."""
    grids: dict[str, Grid] = {}

    def put(v: Value | None, grid: Grid, why: str) -> None:
        if v is None:
            return
        grid = (float(np.float32(grid[0])), int(grid[1]))
        old = grids.setdefault(v.name, grid)
        if old != grid:
            raise CodegenError(f"tensor '{v.name}' is on two grids ({why}: scale {old[0]:g} zero point {old[1]} "
                               f"and scale {grid[0]:g} zero point {grid[1]}); the C backend stores one")

    for v, grid in tensor_grids(graph).items():
        put(v, grid, "an output grid")
    for n in graph.nodes:
        q = n.ann.quant
        if q is None:
            continue
        if q.a_bits == 8 and q.a_scale is not None and q.a_zero_point is not None:
            put(n.input(0), (q.a_scale, q.a_zero_point), f"read by '{n.name}'")
        if q.o_scale is not None and q.o_zero_point is not None:
            put(output_tensor(n), (q.o_scale, q.o_zero_point), f"written by '{n.name}'")
    for name, grid in given.items():
        grids.setdefault(name, grid)
    for n in reversed(graph.nodes):  # readers first, so chains pass a grid back
        if n.op in BACKWARD and not n.domain and n.outputs[0].name in grids:
            for x in n.inputs[:None if n.op == "Concat" else 1]:
                if x is not None and x.const is None and x.name not in grids and len(x.uses) == 1:
                    grids[x.name] = grids[n.outputs[0].name]
    return grids
