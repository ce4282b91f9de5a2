"""Fast costing of NAS-Bench-201 candidates: `estimate()`'s figures without building or
pricing the whole network.

An NB201 network is a fixed skeleton (stem, two reduction blocks, head) around 3 stages of
identical cells, and every tensor inside a stage has one shape. So a node's cost depends only
on its stage and its kind (Relu, Conv 3x3, Conv 1x1, AveragePool, Mul, Constant, Add) and on
the few whole-graph facts a cost model reads (which memory level holds the model's weights on
a roofline; the reuse factor of an FPGA design): each is priced once per target, with the
cost model's own per-op functions, and a network's latency, energy, weights, tiles and FPGA
resources are combined from its node counts, as each kind of target's `estimate` combines them.

Peak memory is not a sum. Between two segments (stem, each cell, each reduction block, head)
a single tensor is live, and every node of a segment is an ancestor of its output, so any
execution order runs the segments one after the other (a Constant node aside, which never
lowers the peak by running early): the peak over the graph's own order, and the lowest peak
over all orders (the MCU's order search), is the largest of the segments' peaks. A segment's
peak is found with the liveness functions on the segment alone (a ~12-node DP instead of a
~200-node one) and kept per cell "memory signature" (its ops with conv 1x1 and 3x3 merged,
which change no tensor size): at most 4^6 = 4,096 signatures per stage.

`NB201Cost(target).price(cell)` gives a `FastCost`; the tests hold it to `estimate()` on the
built graph within 1e-9 relative. `make_coster(space, target)` gives any space's pricing
function: this fast path for NB201 cells, else `estimate()` on `space.build_ir(candidate)`
(memoized per candidate key).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from hwnas.backends.cost import analog, estimate, fpga, mcu, roofline
from hwnas.backends.cost.base import Context, CostTable, NodeWork, activation_size, is_compile_time, node_work
from hwnas.backends.cost.liveness import peak_memory
from hwnas.backends.cost.report import CostReport, NodeCost, Resource, fit_reasons
from hwnas.backends.target import FPGA, MCU, Analog, Roofline, Target, load_target
from hwnas.errors import CostError
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import graph_weights, static_values, traits
from hwnas.search.spaces import Space
from hwnas.search.spaces.ir_build import IRBuilder
from hwnas.search.spaces.nasbench201 import Cell, cell_ir, head_ir, parse_arch, reduction_ir, stem_ir
from hwnas.search.spaces.nb201 import NB201Space

Kind = tuple[int, str]
"""(stage or skeleton segment, node kind): nodes that cost the same on any target."""
FAST_KINDS = ("cpu", "gpu", "mcu", "analog", "fpga")
_SIGNATURES: dict[tuple[bool, int, int], dict[tuple[str, ...], tuple[Counter[str], tuple[int, ...]]]] = {}
PROBE = parse_arch("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|skip_connect~1|nor_conv_3x3~2|")
"""A cell with every node kind a cell can have."""


@dataclass(frozen=True)
class FastCost:
    """A candidate's figures on one target, as `estimate()` reports them."""

    latency_s: float
    energy_j: float
    peak_memory_bytes: int
    weight_bytes: int
    resources: dict[str, Resource] = field(default_factory=dict)

    @property
    def does_not_fit(self) -> list[str]:
        """One sentence per exceeded resource (empty when the candidate fits)."""
        return fit_reasons(self.resources)

    @property
    def fits(self) -> bool:
        """Every resource within its capacity."""
        return not self.does_not_fit

    @classmethod
    def of(cls, report: CostReport) -> FastCost:
        """The figures of a full `estimate()` report."""
        return cls(report.latency_s, report.energy_j, report.peak_memory_bytes, report.weight_bytes,
                   dict(report.resources))


def make_coster(space: Space, target: Target | str) -> Callable[[Hashable], FastCost]:
    """A function pricing `space`'s candidates on `target`: `NB201Cost` for NAS-Bench-201 cells,
    else `estimate()` on the candidate's IR, kept per candidate key (a search re-proposes)."""
    target = target if isinstance(target, Target) else load_target(target)
    if type(space) is NB201Space and target.kind in FAST_KINDS:
        return NB201Cost(target, space).price  # type: ignore[return-value]
    seen: dict[str, FastCost] = {}

    def price(candidate: Hashable) -> FastCost:
        key = space.key(candidate)
        if key not in seen:
            seen[key] = FastCost.of(estimate(space.build_ir(candidate), target))
        return seen[key]

    return price


def _kind(node: Node) -> str:
    return f"Conv{node.attr_ints('kernel_shape')[0]}" if node.op == "Conv" else node.op


def _segment(shape: tuple[int, ...], build: Callable[[IRBuilder, Value], Value]) -> Graph:
    b = IRBuilder("segment", shape)
    out = build(b, b.input)
    if not b.graph.outputs:
        b.graph.outputs.append(out)
    return b.graph


class NB201Segments:
    """The NAS-Bench-201 network of `space` as the segments with one tensor between them: the
    skeleton (stem, the two reductions, head) built once, and a cell alone at each stage's
    shape. `NB201Cost` prices them; `search.robustness` propagates analog noise through them."""

    def __init__(self, space: NB201Space | None = None) -> None:
        self.space = s = space or NB201Space()
        self.shapes = [(1, s.channels << i, s.resolution >> i, s.resolution >> i) for i in range(3)]
        self.skeleton = [_segment((1, 3, s.resolution, s.resolution), lambda b, x: stem_ir(b, x, s.channels)),
                         _segment(self.shapes[0], lambda b, x: reduction_ir(b, x, s.num_cells)),
                         _segment(self.shapes[1], lambda b, x: reduction_ir(b, x, 2 * s.num_cells + 1)),
                         _segment(self.shapes[2], lambda b, x: head_ir(b, x, s.num_classes))]

    def cell_graph(self, cell: Cell, stage: int) -> Graph:
        """One cell alone at `stage`'s shape."""
        return _segment(self.shapes[stage], lambda b, x: cell_ir(b, cell, x, "/cells/cells.0"))

    def segments(self, cell: Cell) -> list[Graph]:
        """The network of `cell` in execution order: stem, the cells of stage 0, reduction, ...,
        head (each graph's input is the previous one's output)."""
        out = [self.skeleton[0]]
        for stage in range(3):
            if stage:
                out.append(self.skeleton[stage])
            out += [self.cell_graph(cell, stage) for _ in range(self.space.num_cells)]
        return [*out, self.skeleton[3]]


def _works(graph: Graph, target: Target, supported: set[str] | dict[str, object]) -> list[NodeWork]:
    """The nodes `price_nodes` prices (not folded, not views), with their work."""
    static = static_values(graph)
    weights = graph_weights(graph, static)
    out = []
    for n in graph.nodes:
        if is_compile_time(n, static) or traits(n).view:
            continue
        w = node_work(n, target, supported, graph, static, weights)
        if w is None:
            raise CostError(f"fast costing: {n.op} node '{n.name}' is not priced on {target.name}")
        out.append(w)
    return out


class NB201Cost:
    """Prices NAS-Bench-201 cells of `space`'s network on `target` (see the module doc)."""

    def __init__(self, target: Target | str, space: NB201Space | None = None) -> None:
        self.target = target if isinstance(target, Target) else load_target(target)
        if self.target.kind not in FAST_KINDS:
            raise CostError(f"fast costing: no fast path for {self.target.kind} targets (use estimate())")
        self.network = NB201Segments(space)
        s = self.space = self.network.space
        self.shapes = self.network.shapes
        supported = self._supported()
        # The skeleton's segments (index -1 .. -4) and one probe cell per stage: a work per kind.
        skeleton = self.network.skeleton
        self.skeleton: list[tuple[Kind, NodeWork]] = [((-1 - i, f"{_kind(w.node)}#{j}"), w) for i, g in
                                                      enumerate(skeleton) for j, w in
                                                      enumerate(_works(g, self.target, supported))]
        self.cell_work: dict[Kind, NodeWork] = {}
        for stage in range(3):
            for w in _works(self.network.cell_graph(PROBE, stage), self.target, supported):
                self.cell_work.setdefault((stage, _kind(w.node)), w)
        self.works = {**dict(self.skeleton), **self.cell_work}
        # Segment peaks depend on the peak's rule (MCU order search or the graph's order) and the
        # network's shapes, not on the target: targets share them.
        memo_key = (self.target.kind == "mcu", s.channels, s.resolution)
        self._signatures = _SIGNATURES.setdefault(memo_key, {})
        self._node_costs: dict[tuple[Kind, object], NodeCost] = {}
        self._skeleton_peak = max(self._peak(g) for g in skeleton)

    # -- what each kind of target needs -------------------------------------------------------
    def _supported(self) -> set[str] | dict[str, object]:
        t = self.target
        if t.kind == "mcu":
            return {p for rates in t.section(MCU).macs_per_cycle.values() for p in rates}
        if t.kind == "fpga":
            return fpga._supported(t.section(FPGA))
        hw = t.section(Analog).digital if t.kind == "analog" else t.section(Roofline)
        return dict(hw.peak_ops_per_s)

    def _peak(self, graph: Graph) -> int:
        if self.target.kind == "mcu":
            return mcu.schedule(graph).peak_bytes
        return peak_memory(graph, activation_size)


    def signature(self, cell: Cell) -> tuple[Counter[str], tuple[int, ...]]:
        """The cell's node kinds (convolutions as 'Conv', counted from the ops) and its segment
        peak per stage, kept per memory signature."""
        key = tuple("conv" if op.startswith("nor_conv") else op for op in cell.ops)
        found = self._signatures.get(key)
        if found is None:
            merged = Cell(tuple("nor_conv_3x3" if k == "conv" else k for k in key))
            graphs = [self.network.cell_graph(merged, stage) for stage in range(3)]
            static = static_values(graphs[0])
            kinds = Counter(_kind(n) for n in graphs[0].nodes if n.op != "Conv" and not is_compile_time(n, static))
            found = self._signatures[key] = (kinds, tuple(self._peak(g) for g in graphs))
        return found

    def segments(self, cell: Cell) -> list[Graph]:
        """The network of `cell` cut into its segments, in execution order (`NB201Segments`)."""
        return self.network.segments(cell)

    # -- pricing --------------------------------------------------------------------------------
    def counts(self, cell: Cell) -> Counter[Kind]:
        """How many nodes of each kind the network of `cell` prices."""
        kinds, _ = self.signature(cell)
        per_cell = Counter(kinds)
        per_cell["Conv3"] = cell.ops.count("nor_conv_3x3")
        per_cell["Conv1"] = cell.ops.count("nor_conv_1x1")
        out: Counter[Kind] = Counter(k for k, _ in self.skeleton)
        for stage in range(3):
            for kind, n in per_cell.items():
                if n:
                    out[(stage, kind)] += n * self.space.num_cells
        return out

    def _cost(self, table: CostTable, kind: Kind, hw: object, ctx: Context, key: object) -> NodeCost:
        c = self._node_costs.get((kind, key))
        if c is None:
            w = self.works[kind]
            fn = table.lookup(w.node.op)
            assert fn is not None
            c = self._node_costs[(kind, key)] = fn(w, hw, ctx)
        return c

    def price(self, cell: Cell | str) -> FastCost:
        """The cell's network on the target: latency, energy, peak memory, weights, resources."""
        cell = parse_arch(cell) if isinstance(cell, str) else cell
        counts = self.counts(cell)
        weight_bytes = sum(n * self.works[k].weight_bytes for k, n in counts.items())
        _, cell_peaks = self.signature(cell)
        peak = max(self._skeleton_peak, *cell_peaks)
        kind = self.target.kind
        if kind == "mcu":
            return self._mcu(counts, weight_bytes, peak)
        if kind == "fpga":
            return self._fpga(counts, weight_bytes)
        if kind == "analog":
            return self._analog(counts, weight_bytes, peak)
        return self._roofline(counts, weight_bytes, peak)

    def _sum(self, costs: list[tuple[int, NodeCost]]) -> tuple[float, float]:
        return (math.fsum(n * (c.latency_s or 0.0) for n, c in costs),
                math.fsum(n * (c.energy_j or 0.0) for n, c in costs))

    def _roofline(self, counts: Counter[Kind], weight_bytes: int, peak: int) -> FastCost:
        hw = self.target.section(Roofline)
        ctx = Context(self.target, weight_bytes)
        level = roofline.level_for(hw, weight_bytes).name
        costs = [(n, self._cost(roofline.table, k, hw, ctx, level)) for k, n in counts.items()]
        latency, energy = self._sum(costs)
        total = weight_bytes + peak
        memory = hw.memory[-1]
        return FastCost(latency, energy, total, weight_bytes, {memory.name: Resource(total, memory.size_bytes, "B")})

    def _mcu(self, counts: Counter[Kind], weight_bytes: int, peak: int) -> FastCost:
        hw = self.target.section(MCU)
        ctx = Context(self.target, weight_bytes)
        costs = [(n, self._cost(mcu.table, k, hw, ctx, None)) for k, n in counts.items()]
        latency, energy = self._sum(costs)
        kernels = {self.works[k].node.op + self.works[k].kind for k in counts}
        flash = weight_bytes + hw.code_bytes_base + hw.code_bytes_per_kernel * len(kernels)
        scratch = max(c.resources.get("scratch_bytes", 0) for _, c in costs)
        sram = int(peak + scratch)
        return FastCost(latency, energy, sram, weight_bytes, {"SRAM": Resource(sram, hw.sram_bytes, "B"),
                                                              "flash": Resource(flash, hw.flash_bytes, "B")})

    def _analog(self, counts: Counter[Kind], weight_bytes: int, peak: int) -> FastCost:
        hw = self.target.section(Analog)
        ctx = Context(self.target, weight_bytes)
        level = roofline.level_for(hw.digital, weight_bytes).name
        costs = [(n, self._cost(analog.table, k, hw, ctx, level), k) for k, n in counts.items()]
        latency, energy = self._sum([(n, c) for n, c, _ in costs])
        tiles = sum(n * int(c.resources.get("tiles", 0)) for n, c, _ in costs)
        digital_weights = sum(n * self.works[k].weight_bytes for n, c, k in costs if "tiles" not in c.resources)
        memory = hw.digital.memory[-1]
        total = peak + digital_weights
        return FastCost(latency, energy, total, weight_bytes, {
            "tiles": Resource(tiles, hw.tiles), f"digital {memory.name}": Resource(total, memory.size_bytes, "B")})

    def _fpga(self, counts: Counter[Kind], weight_bytes: int) -> FastCost:
        hw = self.target.section(FPGA)
        if hw.mode == "layer-by-layer":
            return self._layer_by_layer(counts, weight_bytes)
        report = self._dataflow(counts, weight_bytes)
        if hw.mode == "dataflow" or report.fits:
            return report
        fallback = self._layer_by_layer(counts, weight_bytes)
        return fallback if fallback.fits else report

    def _design(self, counts: Counter[Kind], weight_bytes: int, rf: int) -> tuple[list[tuple[int, NodeCost]],
                                                                                   dict[str, float]]:
        hw = self.target.section(FPGA)
        ctx = fpga.FpgaContext(self.target, weight_bytes, None, reuse_factor=rf)
        costs = [(n, self._cost(fpga.table, k, hw, ctx, ("rf", rf))) for k, n in counts.items()]
        used = {r: sum(n * c.resources.get(r, 0) for n, c in costs) for r in ("dsp", "lut", "bram_18k")}
        return costs, used

    def _dataflow(self, counts: Counter[Kind], weight_bytes: int) -> FastCost:
        hw = self.target.section(FPGA)

        def fits(used: dict[str, float]) -> bool:
            return used["dsp"] <= hw.dsp and used["lut"] <= hw.lut and used["bram_18k"] <= hw.bram_18k

        if isinstance(hw.reuse_factor, int):
            costs, used = self._design(counts, weight_bytes, hw.reuse_factor)
        else:  # the same search as fpga.dataflow: 1, else the smallest fitting power of two up to 2^24
            costs, used = self._design(counts, weight_bytes, 1)
            if not fits(used):
                lo, hi = 1, 24
                costs, used = self._design(counts, weight_bytes, 2**hi)
                if fits(used):
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        trial = self._design(counts, weight_bytes, 2**mid)
                        if fits(trial[1]):
                            hi, (costs, used) = mid, trial
                        else:
                            lo = mid
        interval = max(c.resources["cycles"] for _, c in costs if "cycles" in c.resources) / hw.clock_hz
        latency = interval + sum(n * c.resources.get("fill_cycles", 0) for n, c in costs) / hw.clock_hz
        energy = self._sum(costs)[1] + hw.static_w * latency
        return FastCost(latency, energy, int(used["bram_18k"] * hw.bram_bits // 8), weight_bytes, {
            "DSP": Resource(used["dsp"], hw.dsp), "LUT": Resource(used["lut"], hw.lut),
            "BRAM18K": Resource(used["bram_18k"], hw.bram_18k)})

    def _layer_by_layer(self, counts: Counter[Kind], weight_bytes: int) -> FastCost:
        hw = self.target.section(FPGA)
        multipliers = fpga.engine_multipliers(hw)
        engine = {self.works[k].precision for k in counts if self.works[k].node.op in fpga.ENGINE_OPS}
        buffers = fpga.weight_buffer_bits(multipliers, engine)
        ctx = fpga.LayerContext(self.target, weight_bytes, None, multipliers=multipliers,
                                activation_bram_bits=max(hw.bram_18k * hw.bram_bits - buffers, 0.0))
        costs = [(n, self._cost(fpga.layers, k, hw, ctx, "layer-by-layer")) for k, n in counts.items()]
        engine = {c.precision for _, c in costs if c.macs and c.op in fpga.ENGINE_OPS}
        dsp = max((math.ceil(multipliers[p] / hw.mults_per_dsp[p]) for p in engine if hw.mults_per_dsp.get(p)),
                  default=0)
        lut = max((multipliers[p] * hw.lut_per_mult.get(p, 0.0) for p in engine), default=0.0) + hw.lut_per_layer
        bram = math.ceil(buffers / hw.bram_bits) + max(int(c.resources.get("activation_bram_18k", 0))
                                                       for _, c in costs)
        resources = {"DSP": Resource(dsp, hw.dsp), "LUT": Resource(lut, hw.lut),
                     "BRAM18K": Resource(bram, hw.bram_18k)}
        if hw.offchip_bandwidth_bytes_per_s <= 0:
            offchip = sum(n * c.resources.get("offchip_bytes", 0) for n, c in costs)
            resources["DDR traffic (offchip_bandwidth_bytes_per_s is 0)"] = Resource(offchip, 0, "B")
        for p in sorted(engine):
            if multipliers.get(p, 0) <= 0:
                resources[f"{p} multipliers"] = Resource(1, 0)
        latency, dynamic = self._sum(costs)
        return FastCost(latency, dynamic + hw.static_w * latency, int(bram * hw.bram_bits // 8), weight_bytes,
                        resources)
