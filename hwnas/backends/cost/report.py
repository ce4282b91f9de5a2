"""What a cost model answers: per node latency, energy, bytes and bound, plus totals."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any


class Bound(enum.Enum):
    """What limits a node's latency on the target, or why it has none of its own."""

    COMPUTE = "compute"
    MEMORY = "memory"
    OVERHEAD = "overhead"
    """Kernel launch or dispatch dominates (tiny ops)."""
    FUSED = "fused"
    """Runs inside another node's kernel; its cost is in that node."""
    FREE = "free"
    """No kernel at run time: a view (Reshape, Flatten...) or folded at compile time."""
    UNPRICED = "unpriced"


@dataclass(frozen=True)
class NodeCost:
    """One node's cost on a target: latency, energy, bytes moved, what bounds it, and the
    target-specific resources it uses."""

    node: str
    op: str
    latency_s: float | None
    """None only for unpriced nodes; never a silent zero."""
    energy_j: float | None
    bytes_moved: int
    bound: Bound
    macs: int = 0
    precision: str = ""
    resources: dict[str, float] = field(default_factory=dict)
    """Target-specific usage: tiles, DSPs, BRAM, LUTs, cycles, scratch bytes."""
    note: str = ""
    data_dependent: bool = False
    """Its time depends on the values of its input, not only on their shapes (the note says how)."""

    def to_json(self) -> dict[str, Any]:
        """The cost as plain JSON data."""
        return {
            "node": self.node, "op": self.op, "latency_s": self.latency_s, "energy_j": self.energy_j,
            "bytes_moved": self.bytes_moved, "bound": self.bound.value, "macs": self.macs,
            "precision": self.precision, "resources": dict(self.resources), "note": self.note,
            "data_dependent": self.data_dependent,
        }


@dataclass(frozen=True)
class Resource:
    """A capacity of the target (SRAM, flash, DSP slices, crossbar tiles): how much the graph
    uses of how much there is."""

    used: float
    available: float
    unit: str = ""
    """"B" for bytes (printed as KiB, MiB...), else a count."""

    @property
    def fits(self) -> bool:
        """The use is within the capacity."""
        return self.used <= self.available


@dataclass(frozen=True)
class CostReport:
    """What `estimate` answers for one graph on one target: every node's cost in the graph's
    order, the totals (latency, energy, peak memory, weights), the target's resources and
    whether the graph fits them, and the ops no cost entry prices."""

    target: str
    kind: str
    method: str
    """"analytical", or "calibrated" when a fitted predictor priced the latencies."""
    nodes: list[NodeCost]
    latency_s: float
    energy_j: float
    peak_memory_bytes: int
    """Largest working memory at any point of the execution order (activations, and
    weights where the target keeps them in the same memory)."""
    weight_bytes: int
    order: list[str]
    """The execution order the peak memory was computed over."""
    resources: dict[str, Resource] = field(default_factory=dict)
    does_not_fit: list[str] = field(default_factory=list)
    unpriced: dict[str, int] = field(default_factory=dict)
    """Op -> count of nodes no cost entry prices; their cost is not in the totals."""
    extra: dict[str, float] = field(default_factory=dict)
    """Target-specific totals, such as an FPGA pipeline's initiation interval."""
    mode: str = ""
    """How the target runs the graph where it has more than one way: an FPGA's "dataflow" or
    "layer-by-layer" design; '' where there is one way."""
    machine: str = ""
    """The CPU whose measurements the figures are (`figures_machine`): the calibration's when one
    priced the latencies, else the target file's; '' when they describe no one machine (a datasheet)."""

    @property
    def fits(self) -> bool:
        """Every resource is within its capacity."""
        return not self.does_not_fit

    @property
    def latency_is_lower_bound(self) -> bool:
        """Some node is unpriced, so `latency_s` leaves its time out: the true latency is higher."""
        return bool(self.unpriced)

    @property
    def machine_warning(self) -> str:
        """One line when the figures were measured on another CPU than this one ('' otherwise)."""
        if not self.machine:
            return ""
        from hwnas.backends.measure import cpu_model

        here = cpu_model()
        if self.machine == here:
            return ""
        return (f"the figures were measured on {self.machine}, not on this machine ({here}): "
                f"calibrate here or use host-cpu (measured here)")

    @property
    def data_dependent(self) -> dict[str, int]:
        """Op -> count of nodes whose time depends on their input's values, so that no price from
        shapes is right for every input (each node's note says how)."""
        out: dict[str, int] = {}
        for c in self.nodes:
            if c.data_dependent:
                out[c.op] = out.get(c.op, 0) + 1
        return out

    def node(self, name: str) -> NodeCost:
        """The cost of the node called `name` (KeyError if the graph has none)."""
        for n in self.nodes:
            if n.node == name:
                return n
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON data (what OUT.cost.json holds)."""
        return {
            "target": self.target, "kind": self.kind, "method": self.method,
            "latency_s": self.latency_s, "energy_j": self.energy_j,
            "peak_memory_bytes": self.peak_memory_bytes, "weight_bytes": self.weight_bytes,
            "fits": self.fits, "does_not_fit": list(self.does_not_fit), "unpriced": dict(self.unpriced),
            "resources": {k: {"used": r.used, "available": r.available, "unit": r.unit}
                          for k, r in self.resources.items()},
            "extra": dict(self.extra), "mode": self.mode, "order": list(self.order),
            "latency_is_lower_bound": self.latency_is_lower_bound, "machine": self.machine,
            "machine_warning": self.machine_warning or None, "data_dependent": self.data_dependent,
            "nodes": [n.to_json() for n in self.nodes],
        }


def figures_machine(target_machine: str, predictor: object | None = None) -> str:
    """The CPU a report's figures describe: a calibration's `measured_with["machine"]` when one
    prices the latencies, else the target's `machine` ('' for a datasheet target)."""
    measured_with = getattr(predictor, "measured_with", None)
    if isinstance(measured_with, dict) and measured_with.get("machine"):
        return str(measured_with["machine"])
    return target_machine


def format_latency(report: CostReport) -> str:
    """The total latency, with "≥ " when unpriced nodes make it a lower bound."""
    text = format_seconds(report.latency_s)
    return f"≥ {text}" if report.latency_is_lower_bound else text


def fit_reasons(resources: dict[str, Resource]) -> list[str]:
    """One sentence per resource that is exceeded."""
    out = []
    for name, r in resources.items():
        if not r.fits:
            out.append(f"{name}: needs {_fmt(r.used, r.unit)}, has {_fmt(r.available, r.unit)}")
    return out


def _fmt(x: float, unit: str) -> str:
    if unit == "B":
        return format_bytes(x)
    return f"{x:,.0f}{(' ' + unit) if unit else ''}" if math.isfinite(x) else str(x)


def format_bytes(x: float) -> str:
    """Bytes with a binary prefix: 1.50 MiB."""
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {suffix}"
    return f"{x:.0f} B"


def format_seconds(s: float | None) -> str:
    """Seconds with an SI prefix: 12.3 µs."""
    return _scaled(s, "s")


def format_joules(j: float | None) -> str:
    """Joules with an SI prefix: 4.5 mJ."""
    return _scaled(j, "J")


def _scaled(x: float | None, unit: str) -> str:
    """3 significant digits with an SI prefix from nano to one: 12.3 µs, 4.5 mJ."""
    if x is None:
        return "unpriced"
    for scale, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x / 1e-9:.3g} n{unit}"
