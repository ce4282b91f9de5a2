"""Analog in-memory computing: weight layers on crossbar tiles, the rest on a digital core.

A weight layer is a matrix of rows = Cin/groups · kh · kw (the unrolled window) and cols =
Cout/groups per group; it takes ceil(rows / tile_rows) × ceil(cols / tile_cols) tiles per group,
all weight-stationary. Groups whose matrix fits one tile (a depthwise conv's kh·kw × 1) share
tiles block-diagonally: min(tile_rows // rows, tile_cols // cols) groups per tile, each on its
own rows and columns, so a depthwise conv of C channels takes ceil(C / groups per tile) tiles.
One matrix-vector multiply (MVM) per output pixel (or per row of a dense layer) drives
every tile: each input slice of `input_bits_per_slice` bits goes
through the row DACs, the array integrates, and the column ADCs, shared `tile_cols /
adcs_per_tile` columns each, convert. Energy = DAC conversions + array reads + ADC
conversions; partial sums across row tiles, the affine rescale and fused activations are
digital periphery, priced on the chip's digital core as are all ops that stay digital
(a node placed off the crossbars by a Placement annotation included). The transfers between
the digital core and the tiles (inputs to every column tile, partial sums back from every row
tile) go through the digital core's memory and are priced there. Tiles run in parallel;
layers run one after the other.

A node that `map-analog` placed is priced on the tile size its Placement records (its tile
ids are in the note); the report's tiles are compared with the chip's: "does not fit" when
the placed layers need more.
"""

from __future__ import annotations

import dataclasses
import math

from hwnas.backends.cost import cost_model, roofline
from hwnas.backends.cost.base import (
    Context,
    CostTable,
    NodeWork,
    Predictor,
    activation_size,
    make_report,
    price_nodes,
)
from hwnas.backends.cost.liveness import peak_memory
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.target import Analog, Target
from hwnas.ir.annotations import Placement
from hwnas.ir.graph import Graph, Node
from hwnas.ir.registry import is_static

table = CostTable("analog")
cost = table.cost


def weight_matrix(node: Node) -> tuple[int, int, int] | str:
    """(rows, cols, groups) of a Conv, Gemm or MatMul whose weights are known before run time, per
    group (rows = Cin/groups · kh · kw, cols = Cout/groups), or the reason it has no crossbar matrix."""
    weight = node.input(1)
    if node.op not in ("Conv", "Gemm", "MatMul"):
        return f"{node.op} is not a matrix product"
    if weight is None or not is_static(weight):
        return "its weights are computed at run time (not a constant)"
    shape = weight.static_shape
    if shape is None:
        return "its weight shape is not known"
    if node.op == "Conv":
        groups = node.attr_int("group", 1)
        return int(math.prod(shape[1:])), int(shape[0] // groups), groups
    if node.op == "Gemm":
        if node.attr("transA", 0):
            return "Gemm with transA: the weights would multiply from the left"
        return (shape[0], shape[1], 1) if not node.attr("transB", 0) else (shape[1], shape[0], 1)
    if len(shape) != 2:
        return f"MatMul with a rank-{len(shape)} weight (batched matrices)"
    return shape[0], shape[1], 1


def _matrix(w: NodeWork) -> tuple[int, int, int, int] | None:
    """(rows, cols, groups, MVMs) of a weight layer, or None when its weights are not static."""
    m = weight_matrix(w.node)
    if isinstance(m, str) or w.weight_bytes == 0:
        return None
    rows, cols, groups = m
    out = w.node.outputs[0].type
    numel = out.numel() if out is not None else None
    if not numel:
        return None
    mvms = numel // (cols * groups)
    return int(rows), int(cols), groups, int(mvms)


def groups_per_tile(rows: int, cols: int, hw: Analog) -> int:
    """How many groups of a grouped layer share one tile as diagonal blocks: as many
    rows x cols blocks as fit side by side and one below the other; 1 when a group needs
    more than one tile."""
    if rows > hw.tile_rows or cols > hw.tile_cols:
        return 1
    return max(1, min(hw.tile_rows // rows, hw.tile_cols // cols))


def tiles_for(rows: int, cols: int, groups: int, hw: Analog) -> tuple[int, int, int]:
    """(row tiles, column tiles, all tiles) of one weight layer: row x column tiles per group,
    groups packed block-diagonally where one group's matrix fits a tile."""
    rt, ct = math.ceil(rows / hw.tile_rows), math.ceil(cols / hw.tile_cols)
    return rt, ct, rt * ct * math.ceil(groups / groups_per_tile(rows, cols, hw))


def tile_blocks(rows: int, cols: int, groups: int, hw: Analog) -> list[tuple[int, ...]]:
    """The pieces of a layer's matrix on its tiles, numbered from 0, as `Placement.blocks` holds
    them: (tile, row_start, row_stop, col_start, col_stop, tile_row, tile_col) in the layer's
    block-diagonal matrix (group g at rows g·rows.., columns g·cols..). Row x column tiles per
    group; groups whose matrix fits a tile packed diagonally; as many tiles as `tiles_for` counts."""
    tr, tc = hw.tile_rows, hw.tile_cols
    if rows <= tr and cols <= tc:
        per = groups_per_tile(rows, cols, hw)
        return [(g // per, g * rows, (g + 1) * rows, g * cols, (g + 1) * cols, g % per * rows, g % per * cols)
                for g in range(groups)]
    blocks: list[tuple[int, ...]] = []
    for g in range(groups):
        for r0 in range(0, rows, tr):
            for c0 in range(0, cols, tc):
                blocks.append((len(blocks), g * rows + r0, g * rows + min(r0 + tr, rows),
                               g * cols + c0, g * cols + min(c0 + tc, cols), 0, 0))
    return blocks


def _digital(w: NodeWork, hw: Analog, ctx: Context) -> NodeCost:
    fn = roofline.table.lookup(w.node.op)
    assert fn is not None
    c = fn(w, hw.digital, ctx)
    return dataclasses.replace(c, note=f"digital core; {c.note}")


@dataclasses.dataclass(frozen=True)
class Crossbar:
    """One weight matrix on its tiles: the tiles it takes and what one MVM through them costs."""

    rows: int
    cols: int
    groups: int
    row_tiles: int
    col_tiles: int
    tiles: int
    packed: int
    """Groups side by side on one tile (block-diagonal)."""
    slices: int
    mvm_time_s: float
    dacs: int
    """DAC conversions per MVM, summed over tiles."""
    adcs: int
    energy_j: float
    """Energy of one MVM: DAC and ADC conversions and the array reads."""


def crossbar(rows: int, cols: int, groups: int, hw: Analog, a_bits: int) -> Crossbar:
    """The tiles of a rows x cols matrix per group and the time and energy of one MVM through them,
    its input bit-sliced from `a_bits` bits."""
    rt, ct, tiles = tiles_for(rows, cols, groups, hw)
    packed = min(groups, groups_per_tile(rows, cols, hw))
    slices = math.ceil(min(a_bits, hw.dac_bits) / hw.input_bits_per_slice)
    # A tile's ADCs convert every column in use, the packed groups' columns included.
    cols_per_adc = math.ceil(min(cols * packed, hw.tile_cols) / hw.adcs_per_tile)
    mvm_time = slices * (hw.dac_time_s + hw.array_time_s + cols_per_adc * hw.adc_time_s)
    # Conversions per MVM summed over tiles: each tile's rows get DAC'd, its columns ADC'd.
    dacs = slices * rows * ct * groups
    adcs = slices * cols * rt * groups
    energy = dacs * hw.dac_energy_j + adcs * hw.adc_energy_j + slices * tiles * hw.array_read_energy_j
    return Crossbar(rows, cols, groups, rt, ct, tiles, packed, slices, mvm_time, dacs, adcs, energy)


def _input_bits(w: NodeWork, hw: Analog) -> int:
    q = w.node.ann.quant
    return q.a_bits if q is not None and q.a_bits else hw.dac_bits


@cost("Conv", "Gemm", "MatMul")
def mvm(w: NodeWork, hw: Analog, ctx: Context) -> NodeCost:
    """A Conv, Gemm or MatMul on crossbar tiles: bit-sliced DAC input, the array read and ADC
    conversions per MVM, plus the digital periphery; on the digital core when placed there or
    when its matrix is unknown."""
    placement = w.node.ann.placement
    shape = _matrix(w)
    if shape is None or (placement is not None and not placement.analog):
        return _digital(w, hw, ctx)
    rows, cols, groups, mvms = shape
    hw = _placed(hw, placement)
    bits = _input_bits(w, hw)
    xb = crossbar(rows, cols, groups, hw, bits)
    analog_s = mvms * xb.mvm_time_s
    # Digital core <-> tiles: each column tile gets its rows' inputs, each row tile sends back its
    # columns' (partial) sums, staged in the digital core's memory.
    transfer = mvms * groups * (rows * xb.col_tiles * math.ceil(bits / 8)
                                + cols * xb.row_tiles * math.ceil(hw.adc_bits / 8))
    # Digital periphery: add partial sums of the row tiles, rescale, bias, fused activation.
    periphery = dataclasses.replace(w, macs=0, flops=mvms * cols * groups * (xb.row_tiles + 2) + w.flops - 2 * w.macs,
                                    weight_bytes=0, act_bytes_read=w.act_bytes_read + transfer)
    digital = roofline.roofline(periphery, hw.digital)
    digital_s = digital.latency_s or 0.0  # a roofline always gives a latency
    latency = analog_s + digital_s
    energy = mvms * xb.energy_j + (digital.energy_j or 0.0)
    bound = Bound.COMPUTE if analog_s >= digital_s else Bound.MEMORY
    resources = {"tiles": xb.tiles, "row_tiles": xb.row_tiles, "col_tiles": xb.col_tiles, "mvms": mvms,
                 "input_slices": xb.slices, "adc_conversions": mvms * xb.adcs, "dac_conversions": mvms * xb.dacs,
                 "devices": rows * cols * groups * hw.devices_per_weight, "transfer_bytes": transfer}
    placed = f" (tiles {_ranges(placement.tile_ids)})" if placement is not None and placement.tile_ids else ""
    note = f"crossbar: {xb.tiles} tiles{placed}" + (
        f", {xb.packed} groups per tile (block-diagonal)" if xb.packed > 1 else "")
    return w.node_cost(latency, energy, bound, resources=resources, note=note)


def _placed(hw: Analog, placement: Placement | None) -> Analog:
    """The hardware with map-analog's tile size, where it placed the layer."""
    if placement is not None and placement.tile_rows and placement.tile_cols:
        return dataclasses.replace(hw, tile_rows=placement.tile_rows, tile_cols=placement.tile_cols)
    return hw


def _ranges(ids: tuple[int, ...]) -> str:
    """Tile ids as ranges: 0-3, 7."""
    parts: list[str] = []
    for i in sorted(ids):
        if parts and int(parts[-1].split("-")[-1]) == i - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{i}"
        else:
            parts.append(str(i))
    return ", ".join(parts)


RECURRENT_OPS = ("LSTM", "GRU", "RNN")


def recurrent_matrices(node: Node) -> tuple[int, int, int, int] | str:
    """(directions, gate rows x hidden, input size, hidden size) of a recurrent layer whose W and
    R are known before run time, or the reason it has no crossbar matrices."""
    weight, rec = node.input(1), node.input(2)
    if not all(v is not None and is_static(v) for v in (weight, rec)):
        return "its weights are computed at run time (not a constant)"
    ws, rs = (v.type.static_shape if v is not None and v.type is not None else None for v in (weight, rec))
    if ws is None or rs is None or len(ws) != 3 or len(rs) != 3:
        return "its weight shapes are not known"
    return ws[0], ws[1], ws[2], rs[2]


def _recurrent_matrices(w: NodeWork) -> tuple[int, int, int, int, int] | None:
    """`recurrent_matrices` and the steps per direction (sequence x batch), where all are known."""
    m = recurrent_matrices(w.node)
    x = w.node.input(0)
    xs = x.type.static_shape if x is not None and x.type is not None else None
    if isinstance(m, str) or not w.weight_bytes or xs is None or len(xs) != 3:
        return None
    return (*m, xs[0] * xs[1])


def layer_blocks(node: Node, hw: Analog) -> list[tuple[int, ...]] | str:
    """A weight layer's pieces on its tiles, numbered from 0 (`tile_blocks`), or the reason it
    has none: a Conv, Gemm or MatMul's matrix; a recurrent layer's W (input rows) per direction,
    then its R (hidden-state rows) per direction on tiles of their own, as `recurrent` prices it."""
    if node.op in RECURRENT_OPS:
        m = recurrent_matrices(node)
        if isinstance(m, str):
            return m
        directions, gate_rows, inputs, hidden = m
        w_blocks = tile_blocks(inputs, gate_rows, directions, hw)
        shift = tiles_for(inputs, gate_rows, directions, hw)[2]
        r_blocks = [(t + shift, r0 + directions * inputs, r1 + directions * inputs, c0 + directions * gate_rows,
                     c1 + directions * gate_rows, tr, tc)
                    for t, r0, r1, c0, c1, tr, tc in tile_blocks(hidden, gate_rows, directions, hw)]
        return w_blocks + r_blocks
    matrix = weight_matrix(node)
    return matrix if isinstance(matrix, str) else tile_blocks(*matrix, hw)


@cost(*RECURRENT_OPS)
def recurrent(w: NodeWork, hw: Analog, ctx: Context) -> NodeCost:
    """A recurrent layer with constant W and R on crossbar tiles: each step drives W with the
    input and R with the previous hidden state, on tiles of their own (in parallel; a GRU whose
    reset gate applies before R drives R's tiles twice, one after the other), one set of tiles
    per direction; the gates' math is digital periphery. On the digital core when placed there
    or when W or R is not a constant."""
    placement = w.node.ann.placement
    shape = _recurrent_matrices(w)
    if shape is None or (placement is not None and not placement.analog):
        return _digital(w, hw, ctx)
    directions, gate_rows, inputs, hidden, steps = shape
    hw = _placed(hw, placement)
    bits = _input_bits(w, hw)
    wx, rh = crossbar(inputs, gate_rows, directions, hw, bits), crossbar(hidden, gate_rows, directions, hw, bits)
    serial_r = 2 if w.node.op == "GRU" and not w.node.attr_int("linear_before_reset", 0) else 1
    analog_s = steps * max(wx.mvm_time_s, serial_r * rh.mvm_time_s)
    # Digital periphery: partial sums of both products' row tiles, then the gates' math.
    gate_math = max(w.flops - 2 * w.macs, 0)
    periphery = dataclasses.replace(w, macs=0, weight_bytes=0, flops=steps * gate_rows * directions
                                    * (wx.row_tiles + rh.row_tiles) + gate_math)
    digital = roofline.roofline(periphery, hw.digital)
    digital_s = digital.latency_s or 0.0
    energy = steps * (wx.energy_j + serial_r * rh.energy_j) + (digital.energy_j or 0.0)
    tiles = wx.tiles + rh.tiles
    mvms = steps * (1 + serial_r)
    resources = {"tiles": tiles, "row_tiles": wx.row_tiles + rh.row_tiles, "col_tiles": wx.col_tiles + rh.col_tiles,
                 "mvms": mvms, "input_slices": wx.slices,
                 "adc_conversions": steps * (wx.adcs + serial_r * rh.adcs),
                 "dac_conversions": steps * (wx.dacs + serial_r * rh.dacs),
                 "devices": (inputs + hidden) * gate_rows * directions * hw.devices_per_weight}
    placed = f", tiles {_ranges(placement.tile_ids)}" if placement is not None and placement.tile_ids else ""
    note = f"crossbar: {tiles} tiles (W {wx.tiles}, R {rh.tiles}{placed}); gates on the digital core"
    return w.node_cost(analog_s + digital_s, energy,
                       Bound.COMPUTE if analog_s >= digital_s else Bound.MEMORY, resources=resources, note=note)


@cost("*")
def digital(w: NodeWork, hw: Analog, ctx: Context) -> NodeCost:
    """Any other op runs on the digital core, priced by its roofline."""
    return _digital(w, hw, ctx)


@cost_model("analog")
def estimate(graph: Graph, target: Target, predictor: Predictor | None = None) -> CostReport:
    """The analog accelerator's report: per-node costs, tiles used against the tiles it has,
    and the digital core's memory for activations and the weights left off the tiles."""
    hw = target.section(Analog)
    costs, works = price_nodes(graph, target, table, hw, hw.digital.peak_ops_per_s, predictor)
    tiles = sum(int(c.resources.get("tiles", 0)) for c in costs)
    on_tiles = {c.node for c in costs if "tiles" in c.resources}
    digital_weights = sum(w.weight_bytes for w in works if w.node.name not in on_tiles)
    digital_memory = hw.digital.memory[-1]
    activations = peak_memory(graph, activation_size)
    resources = {
        "tiles": Resource(tiles, hw.tiles),
        f"digital {digital_memory.name}": Resource(activations + digital_weights, digital_memory.size_bytes, "B"),
    }
    latency = sum(c.latency_s for c in costs if c.latency_s is not None)
    analog_weights = sum(int(c.resources.get("devices", 0)) for c in costs)
    extra = {"analog_layers": len(on_tiles), "pcm_devices": analog_weights,
             "adc_conversions": sum(int(c.resources.get("adc_conversions", 0)) for c in costs),
             "transfer_bytes": sum(int(c.resources.get("transfer_bytes", 0)) for c in costs),
             "tile_utilization": (sum(c.resources.get("devices", 0) for c in costs) / hw.devices_per_weight)
             / max(tiles * hw.tile_rows * hw.tile_cols, 1)}
    return make_report(target, graph, costs, list(graph.nodes), latency_s=latency,
                       peak_memory_bytes=activations + digital_weights,
                       weight_bytes=sum(w.weight_bytes for w in works), resources=resources,
                       predictor=predictor, extra=extra)
