"""FPGAs: a layer-per-stage dataflow pipeline in the style of hls4ml's io_stream designs.

Each weight layer gets `ceil(MACs per output vector / reuse factor)` multipliers, on DSP
slices (several narrow multiplications per slice) or, below DSP widths, in LUTs; it
produces one output vector (a pixel's channels, a row) every `reuse factor` cycles.
Weights sit in BRAM (registers when the reuse factor is 1); convolutions and pools add line
buffers of (k-1) input rows. Every layer runs at once, so the pipeline's initiation
interval is its slowest layer and its latency that interval plus each layer's fill time
(rows a window needs before its first output). A reuse factor of "auto" picks the smallest
power of two with which the design fits the device.

When that design does not fit (mode "auto"), or when asked for (mode "layer-by-layer"), the
graph runs layer by layer, as DPU-style overlays do: one compute engine sized to the device
(every DSP slice at its packing, LUT multipliers below DSP widths) runs the layers in turn, each
layer's weights streamed from DDR at `offchip_bandwidth_bytes_per_s` while it computes, and its
input and output kept in BRAM when they fit there, else streamed through DDR as well. A layer
takes max(MACs / multipliers, DDR bytes / bandwidth); the latency is the sum. The report says
which mode it priced; "does not fit" remains where even layer by layer cannot run (no DDR
bandwidth, no multiplier at a layer's precision, or a line buffer larger than the BRAM).
"""

from __future__ import annotations

import dataclasses
import math

from hwnas.backends.cost import cost_model
from hwnas.backends.cost.base import (
    Context,
    CostTable,
    NodeWork,
    Predictor,
    activation_size,
    make_report,
    precision_for,
    price_nodes,
)
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.target import FPGA, Target
from hwnas.ir.graph import Graph

table = CostTable("fpga")
cost = table.cost


def _bits(precision: str) -> int:
    return int(precision.lstrip("intfpb"))


def _spatial(w: NodeWork) -> tuple[int, int, int]:
    """(output vectors, input rows x row length, channels of one input vector)."""
    x, y = w.node.input(0), w.node.outputs[0]
    xs = x.type.shape if x is not None and x.type is not None and x.type.shape else ()
    ys = y.type.shape if y.type is not None and y.type.shape else ()
    static = y.type.static_shape if y.type is not None else None
    if static is not None and len(static) >= 3:
        vectors = math.prod(static[2:]) * static[0]
    else:
        vectors = math.prod(d for d in ys[:-1] if isinstance(d, int)) if ys else 1
    in_rows = xs[2] if len(xs) >= 4 and isinstance(xs[2], int) else 1
    row = xs[3] if len(xs) >= 4 and isinstance(xs[3], int) else 1
    channels = xs[1] if len(xs) >= 2 and isinstance(xs[1], int) else 1
    return max(int(vectors), 1), in_rows * row, channels


def _fill_fraction(w: NodeWork, in_pixels: int) -> float:
    """Share of a layer's cycles before its first output: k-1 rows and k pixels for a window."""
    kernel = w.node.attr_ints("kernel_shape")
    # The windowed ops this model gives a fill time. The registry's windowed ops (conv kernels,
    # pools that are not global) also take in ConvInteger, QLinearConv, ConvTranspose and LpPool,
    # which would change their latency, so the model keeps its own list.
    if w.node.op in ("Conv", "MaxPool", "AveragePool") and len(kernel) == 2:
        x = w.node.input(0)
        shape = x.type.static_shape if x is not None and x.type is not None else None
        row = shape[3] if shape is not None and len(shape) == 4 else 1
        return min(1.0, ((kernel[0] - 1) * row + kernel[1]) / max(in_pixels, 1))
    return 1.0  # dense layers and global reductions need their whole input


def _layer(w: NodeWork, hw: FPGA, rf: int, multipliers_per_vector: int, weight_bits: int, line_bits: int,
           streamed: bool = False, vectors: int | None = None) -> NodeCost:
    spatial_vectors, in_pixels, _ = _spatial(w)
    vectors = vectors or spatial_vectors
    if streamed:  # reads one input vector a cycle, however few it writes
        vectors = max(vectors, in_pixels)
    reuse = min(rf, max(multipliers_per_vector, 1))
    mults = math.ceil(multipliers_per_vector / reuse) if multipliers_per_vector else 0
    per_dsp = hw.mults_per_dsp.get(w.precision, 0.0)
    dsp = math.ceil(mults / per_dsp) if per_dsp > 0 and mults else 0
    lut = mults * hw.lut_per_mult.get(w.precision, 0.0) + hw.lut_per_layer
    bram = 0
    if weight_bits and reuse > 1:
        # Enough BRAM to hold the weights and to feed every multiplier each cycle (72-bit ports).
        bram = max(math.ceil(weight_bits / hw.bram_bits), math.ceil(mults * _bits(w.precision) / 72))
    elif weight_bits:
        lut += weight_bits / 64  # fully unrolled: weights become constants in LUTs
    bram += math.ceil(line_bits / hw.bram_bits) if line_bits else 0
    cycles = vectors * max(reuse, 1)
    latency = cycles / hw.clock_hz
    energy = (w.macs * hw.pj_per_mac.get(w.precision, max(hw.pj_per_mac.values()))
              + w.macs * _bits(w.precision) * hw.pj_per_bram_bit * (reuse > 1)) * 1e-12
    resources = {"dsp": dsp, "lut": lut, "bram_18k": bram, "cycles": cycles, "reuse_factor": reuse,
                 "fill_cycles": cycles * _fill_fraction(w, in_pixels)}
    return w.node_cost(latency, energy, Bound.COMPUTE, resources=resources)


def _line_bits(w: NodeWork) -> int:
    kernel = w.node.attr_ints("kernel_shape")
    x = w.node.input(0)
    if len(kernel) != 2 or x is None or not x.type or not x.type.shape or len(x.type.shape) != 4:
        return 0
    _, c, _, row = x.type.shape
    bits = activation_size(x.producer, x) * 8 // max(x.type.numel() or 1, 1)
    return int((kernel[0] - 1) * (row if isinstance(row, int) else 1) * (c if isinstance(c, int) else 1) * bits)


@cost("Conv", "ConvInteger", "QLinearConv", "ConvTranspose")
def conv(w: NodeWork, hw: FPGA, ctx: FpgaContext) -> NodeCost:
    """A convolution as a pipeline stage: multipliers for one output pixel's MACs over the
    reuse factor, weights in BRAM, and line buffers of (k-1) input rows."""
    vectors, _, _ = _spatial(w)
    per_vector = w.macs // vectors if vectors else 0
    return _layer(w, hw, ctx.reuse_factor, per_vector, w.weight_bytes * 8, _line_bits(w))


@cost("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul")
def dense(w: NodeWork, hw: FPGA, ctx: FpgaContext) -> NodeCost:
    """A dense layer as a pipeline stage: multipliers for one output vector over the reuse
    factor, weights in BRAM, no line buffer. An output vector is one row of the product (a batched
    MatMul of two activations, attention's, has batch x rows of them)."""
    y = w.node.outputs[0].type
    shape = y.static_shape if y is not None else None
    vectors = max(math.prod(shape[:-1]), 1) if shape else _spatial(w)[0]
    per_vector = w.macs // vectors if vectors else 0
    return _layer(w, hw, ctx.reuse_factor, per_vector, w.weight_bytes * 8, 0, vectors=vectors)


def _steps(w: NodeWork) -> int:
    """Steps of a recurrent layer over all directions: sequence length x batch x directions."""
    x, weight = w.node.input(0), w.node.input(1)
    xs = x.type.static_shape if x is not None and x.type is not None else None
    ws = weight.type.static_shape if weight is not None and weight.type is not None else None
    if xs is None or ws is None or len(xs) != 3:
        return 0
    return xs[0] * xs[1] * ws[0]  # (seq, batch) in either layout, times directions


@cost("LSTM", "GRU", "RNN")
def recurrent(w: NodeWork, hw: FPGA, ctx: FpgaContext) -> NodeCost:
    """A recurrent layer as a pipeline stage (hls4ml's LSTM and GRU): multipliers for one step's W
    and R products over the reuse factor, one step every reuse factor cycles, weights in BRAM.
    Steps of different sequences and directions interleave; the wait of a step on the previous
    step's hidden state (the multiply-add tree's depth) is not counted."""
    steps = _steps(w)
    return _layer(w, hw, ctx.reuse_factor, w.macs // steps if steps else 0, w.weight_bytes * 8, 0,
                  vectors=steps or None)


@cost("*")
def stream(w: NodeWork, hw: FPGA, ctx: Context) -> NodeCost:
    """Any other op (pools, element-wise, concatenation) as LUT logic that streams one vector
    a cycle, with line buffers for windowed pools."""
    # Pools, element-wise ops, concatenation: LUT logic that handles one vector per cycle.
    c = _layer(w, hw, 1, 0, 0, _line_bits(w), streamed=True)
    # Their adders and comparators cost about what a multiply-accumulate does at that width.
    energy = w.flops * hw.pj_per_mac.get(w.precision, max(hw.pj_per_mac.values())) * 1e-12
    return dataclasses.replace(c, energy_j=energy, resources={
        **c.resources, "lut": c.resources["lut"] + w.flops / max(c.resources["cycles"], 1) * 8})


@dataclasses.dataclass(frozen=True)
class FpgaContext(Context):
    """The cost context with the reuse factor of the design being priced."""

    reuse_factor: int = 1


def _design(graph: Graph, target: Target, rf: int, predictor: Predictor | None):  # noqa: ANN202
    hw = target.section(FPGA)
    costs, works = price_nodes(graph, target, table, hw, _supported(hw), predictor,
                               context=lambda ctx: FpgaContext(**vars(ctx), reuse_factor=rf))
    used = {k: sum(c.resources.get(k, 0) for c in costs) for k in ("dsp", "lut", "bram_18k")}
    return costs, works, used


# -- layer by layer ------------------------------------------------------------------------

layers = CostTable("fpga-layer-by-layer")
ENGINE_OPS = ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "Gemm", "MatMul", "MatMulInteger",
              "QLinearMatMul", "LSTM", "GRU", "RNN")
"""The ops the shared engine runs; the rest stream through LUT logic as in the dataflow design."""


@dataclasses.dataclass(frozen=True)
class LayerContext(Context):
    """The cost context of the layer-by-layer design: the engine's multipliers per precision and
    the BRAM bits left for activations beside the engine's weight buffers."""

    multipliers: dict[str, int] = dataclasses.field(default_factory=dict)
    activation_bram_bits: float = 0.0


def engine_multipliers(hw: FPGA) -> dict[str, int]:
    """The shared engine's multipliers at each precision: every DSP slice at its packing, as many
    as the LUTs for their glue allow; below DSP widths, as many LUT multipliers as the LUTs hold
    (one layer's control logic set aside)."""
    luts = max(hw.lut - hw.lut_per_layer, 0.0)
    out = {}
    for p in sorted(set(hw.mults_per_dsp) | set(hw.lut_per_mult)):
        per_dsp, glue = hw.mults_per_dsp.get(p, 0.0), hw.lut_per_mult.get(p, 0.0)
        by_lut = luts / glue if glue > 0 else math.inf
        n = min(hw.dsp * per_dsp, by_lut) if per_dsp > 0 else by_lut if glue > 0 else 0.0
        out[p] = int(n)
    return out


def weight_buffer_bits(multipliers: dict[str, int], precisions: set[str]) -> int:
    """BRAM bits for the engine's weights: two tiles (one in use, one loading from DDR) of one
    weight per multiplier, for the precision among `precisions` that needs the most."""
    return max((2 * multipliers.get(p, 0) * _bits(p) for p in precisions), default=0)


def _design_bytes(nbytes: int, precision: str, q_bits: int | None, stored_bits: int) -> int:
    """Bytes of a tensor as the design holds it: at its quantized width, or at the design's
    fixed-point precision for float tensors (the IR counts them at their float width)."""
    if q_bits:
        return nbytes
    return math.ceil(nbytes * min(_bits(precision), stored_bits) / stored_bits)


def _dtype_bits(w: NodeWork, i: int) -> int:
    v = w.node.input(i)
    return v.type.dtype.bits if v is not None and v.type is not None else 32


def _layer_step(w: NodeWork, hw: FPGA, ctx: LayerContext, cycles: float, weight_bytes: int, energy_j: float,
                line_bits: int) -> NodeCost:
    """One layer's turn on the engine: its cycles, or its DDR traffic where that is slower."""
    q = w.node.ann.quant
    act = _design_bytes(w.act_bytes_read + w.act_bytes_written, w.precision, q.a_bits if q else None,
                        _dtype_bits(w, 0))
    on_chip = act * 8 <= ctx.activation_bram_bits
    offchip = weight_bytes + (0 if on_chip else act)
    compute_s = cycles / hw.clock_hz
    bandwidth = hw.offchip_bandwidth_bytes_per_s
    memory_s = (offchip / bandwidth if bandwidth > 0 else math.inf) if offchip else 0.0
    bram = math.ceil((act * 8 if on_chip else line_bits) / hw.bram_bits)
    where = "activations in BRAM" if on_chip else "activations through DDR"
    note = f"layer by layer: {where}" + ("; weights from DDR" if weight_bytes else "")
    return w.node_cost(max(compute_s, memory_s), energy_j + offchip * hw.offchip_pj_per_byte * 1e-12,
                       Bound.COMPUTE if compute_s >= memory_s else Bound.MEMORY, note=note,
                       resources={"cycles": cycles, "offchip_bytes": offchip, "activation_bram_18k": bram})


@layers.cost(*ENGINE_OPS)
def engine_layer(w: NodeWork, hw: FPGA, ctx: LayerContext) -> NodeCost:
    """A weight layer on the shared engine: MACs over its multipliers at the layer's precision,
    weights streamed from DDR (read once from BRAM per MAC)."""
    if w.macs == 0:
        return stream_layer(w, hw, ctx)
    q = w.node.ann.quant
    cycles = math.ceil(w.macs / max(ctx.multipliers.get(w.precision, 0), 1))
    weights = _design_bytes(w.weight_bytes, w.precision, q.w_bits if q else None, _dtype_bits(w, 1))
    energy = w.macs * (hw.pj_per_mac.get(w.precision, max(hw.pj_per_mac.values()))
                       + _bits(w.precision) * hw.pj_per_bram_bit) * 1e-12
    line = _design_bytes(_line_bits(w), w.precision, q.a_bits if q else None, _dtype_bits(w, 0))
    return _layer_step(w, hw, ctx, cycles, weights, energy, line)


@layers.cost("*")
def stream_layer(w: NodeWork, hw: FPGA, ctx: LayerContext) -> NodeCost:
    """Any other op (pools, element-wise, concatenation): LUT logic streaming one vector a cycle,
    as in the dataflow design, its activations in BRAM or through DDR."""
    c = stream(w, hw, ctx)
    q = w.node.ann.quant
    line = _design_bytes(_line_bits(w), w.precision, q.a_bits if q else None, _dtype_bits(w, 0))
    return _layer_step(w, hw, ctx, c.resources["cycles"], 0, c.energy_j or 0.0, line)


def _supported(hw: FPGA) -> set[str]:
    # Float layers run in the design's fixed-point type (hls4ml's default is ap_fixed<16,6>).
    return {p for p in hw.mults_per_dsp if not p.startswith(("fp", "bf"))} | {hw.float_precision}


def layer_by_layer(graph: Graph, target: Target, predictor: Predictor | None = None) -> CostReport:
    """The layer-by-layer design's report: the layers' summed latencies, the engine's DSPs and
    LUTs, BRAM for its weight buffers and the largest on-chip activations, the DDR traffic; "does
    not fit" names what keeps it from running."""
    hw = target.section(FPGA)
    multipliers = engine_multipliers(hw)
    supported = _supported(hw)
    engine = {precision_for(n, supported) for n in graph.nodes if n.op in ENGINE_OPS}
    buffers = weight_buffer_bits(multipliers, engine)
    act_bits = max(hw.bram_18k * hw.bram_bits - buffers, 0.0)
    costs, works = price_nodes(graph, target, layers, hw, supported, predictor,
                               context=lambda ctx: LayerContext(**vars(ctx), multipliers=multipliers,
                                                                activation_bram_bits=act_bits))
    engine = {c.precision for c in costs if c.macs and c.op in ENGINE_OPS}
    dsp = max((math.ceil(multipliers[p] / hw.mults_per_dsp[p]) for p in engine if hw.mults_per_dsp.get(p)),
              default=0)
    lut = max((multipliers[p] * hw.lut_per_mult.get(p, 0.0) for p in engine), default=0.0) + hw.lut_per_layer
    bram = math.ceil(buffers / hw.bram_bits) + max((int(c.resources.get("activation_bram_18k", 0)) for c in costs),
                                                   default=0)
    resources = {"DSP": Resource(dsp, hw.dsp), "LUT": Resource(lut, hw.lut), "BRAM18K": Resource(bram, hw.bram_18k)}
    offchip = sum(c.resources.get("offchip_bytes", 0) for c in costs)
    if hw.offchip_bandwidth_bytes_per_s <= 0:
        resources["DDR traffic (offchip_bandwidth_bytes_per_s is 0)"] = Resource(offchip, 0, "B")
    for p in sorted(engine):
        if multipliers.get(p, 0) <= 0:
            resources[f"{p} multipliers"] = Resource(1, 0)
    latency = sum(c.latency_s for c in costs if c.latency_s is not None)
    dynamic = sum(c.energy_j for c in costs if c.energy_j is not None)
    extra = {"offchip_bytes": offchip, "throughput_per_s": 1 / latency if latency else 0.0,
             "engine_multipliers": max((multipliers[p] for p in engine), default=0)}
    report = make_report(target, graph, costs, list(graph.nodes), latency_s=latency,
                         peak_memory_bytes=int(bram * hw.bram_bits // 8),
                         weight_bytes=sum(w.weight_bytes for w in works),
                         resources=resources, predictor=predictor, extra=extra,
                         energy_j=dynamic + hw.static_w * latency)
    return dataclasses.replace(report, mode="layer-by-layer")


@cost_model("fpga")
def estimate(graph: Graph, target: Target, predictor: Predictor | None = None) -> CostReport:
    """The FPGA report in the target's mode: the dataflow design ("dataflow"), the layer-by-layer
    one ("layer-by-layer"), or ("auto") the dataflow design where it fits, else layer by layer
    where that runs, else the dataflow design with what it lacks."""
    hw = target.section(FPGA)
    if hw.mode == "layer-by-layer":
        return layer_by_layer(graph, target, predictor)
    report = dataflow(graph, target, predictor)
    if hw.mode == "dataflow" or report.fits:
        return report
    fallback = layer_by_layer(graph, target, predictor)
    return fallback if fallback.fits else report


def dataflow(graph: Graph, target: Target, predictor: Predictor | None = None) -> CostReport:
    """The FPGA pipeline's report: the initiation interval of its slowest stage plus the fill
    time, and DSP, LUT and BRAM use against the device (smallest fitting reuse factor when "auto")."""
    hw = target.section(FPGA)
    if isinstance(hw.reuse_factor, int):
        rf = hw.reuse_factor
        costs, works, used = _design(graph, target, rf, predictor)
    else:
        # Resource use falls as the reuse factor grows (from 2 up: at 1 the weights are
        # registers, not BRAM), so a binary search over powers of two finds the smallest
        # that fits; when even full serialization does not fit, that design is reported.
        def fits(design) -> bool:  # noqa: ANN001
            used = design[2]
            return used["dsp"] <= hw.dsp and used["lut"] <= hw.lut and used["bram_18k"] <= hw.bram_18k

        rf = 1
        design = _design(graph, target, 1, predictor)
        if not fits(design):
            lo, hi = 1, 24
            rf = 2**hi
            design = _design(graph, target, rf, predictor)
            if fits(design):
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    trial = _design(graph, target, 2**mid, predictor)
                    if fits(trial):
                        hi, design, rf = mid, trial, 2**mid
                    else:
                        lo = mid
        costs, works, used = design
    cycles = [c.resources["cycles"] for c in costs if "cycles" in c.resources]
    interval = max(cycles, default=0) / hw.clock_hz
    latency = interval + sum(c.resources.get("fill_cycles", 0) for c in costs) / hw.clock_hz
    dynamic = sum(c.energy_j for c in costs if c.energy_j is not None)
    weight_bytes = sum(w.weight_bytes for w in works)
    resources = {
        "DSP": Resource(used["dsp"], hw.dsp),
        "LUT": Resource(used["lut"], hw.lut),
        "BRAM18K": Resource(used["bram_18k"], hw.bram_18k),
    }
    extra = {"initiation_interval_s": interval, "throughput_per_s": 1 / interval if interval else 0.0,
             "reuse_factor": max((c.resources.get("reuse_factor", 1) for c in costs), default=rf)}
    report = make_report(target, graph, costs, list(graph.nodes), latency_s=latency,
                         peak_memory_bytes=used["bram_18k"] * hw.bram_bits // 8, weight_bytes=weight_bytes,
                         resources=resources, predictor=predictor, extra=extra,
                         energy_j=dynamic + hw.static_w * latency)
    return dataclasses.replace(report, mode="dataflow")
