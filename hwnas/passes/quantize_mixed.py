"""Mixed-precision bit allocation (HAWQ-V3, Yao et al., ICML 2021): each quantizable layer
gets the weight width that minimizes the total sensitivity under a budget, solved exactly
as an integer linear program with scipy's MILP solver (HiGHS).

Sensitivity of layer l at b bits is HAWQ's second-order term Ω_l(b) = Tr(H_l)/n_l ·
‖Q_b(W_l) − W_l‖², with the Hessian trace of the loss estimated by Hutchinson's method
(E[vᵀHv] over Rademacher v, Hessian-vector products by double backprop through the torch
emission), or — `sensitivity=perturbation` — the measured squared change of the outputs
when that layer alone is quantized. The budget is a share of the quantized layers' cost at
the widest width: model size (weight bits), BOPs (MACs × weight bits × activation bits), or
latency or energy on a target from hwnas's cost models.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from hwnas.backends.target import load_target
from hwnas.errors import PipelineError, TargetError, first_line
from hwnas.ir.graph import Graph, Node
from hwnas.ir.registry import op_counts
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.bind_dims import sized_shape
from hwnas.passes.quantize import (
    RANDOM_DIMS,
    QuantizeError,
    calibration_set,
    check_bits,
    ones_hint,
    prepare_layers,
    quantizable,
    quantize_layers,
)

Metric = Literal["size", "bops", "latency", "energy"]


@dataclass(frozen=True)
class Allocation:
    """A mixed-precision choice: weight bits per layer, its total sensitivity and cost, and
    the budget it met (`full`: the cost at the widest width everywhere, in `metric`'s unit)."""

    bits: dict[str, int]
    """Layer name → weight bits."""
    sensitivity: float
    cost: float
    budget: float
    metric: str = "size"
    full: float = 0.0

    def summary(self) -> str:
        """One line a user reads: the bits of each layer, and the cost against the budget."""
        if not self.bits:
            return "no layer to quantize"
        layers = ", ".join(f"{n}={b}" for n, b in self.bits.items())
        widths = sorted(set(self.bits.values()))
        counts = ", ".join(f"{sum(b == w for b in self.bits.values())} at {w}" for w in widths)
        share = f" ({self.cost / self.full:.1%} of {_amount(self.metric, self.full)} at the widest width)" \
            if self.full > 0 else ""
        return (f"weight bits of {len(self.bits)} layers ({counts}): {layers}; {self.metric} "
                f"{_amount(self.metric, self.cost)} of a budget of {_amount(self.metric, self.budget)}{share}")


def _amount(metric: str, value: float) -> str:
    if metric == "size":
        return f"{value / 1024:.4g} KiB" if value >= 1024 else f"{value:.4g} B"
    if metric == "bops":
        return f"{value / 1e9:.4g} GBOPs"
    if metric == "latency":
        return f"{value * 1e3:.4g} ms"
    return f"{value * 1e3:.4g} mJ"


def parse_bits(text: str) -> tuple[int, ...]:
    """The candidate widths of a `bits=4,8` option, sorted and distinct; PipelineError unless
    there are two or more supported widths."""
    try:
        bits = tuple(sorted({int(b) for b in text.replace(";", ",").split(",") if b.strip()}))
    except ValueError:
        raise PipelineError(f"quantize-mixed: bits must be comma-separated integers, not '{text}'") from None
    if len(bits) < 2:
        raise PipelineError(f"quantize-mixed: bits needs at least two widths to choose from, not '{text}'")
    for b in bits:
        try:
            check_bits("bits", b)
        except ValueError as e:
            raise PipelineError(f"quantize-mixed: {e}") from None
    return bits


# -- costs ------------------------------------------------------------------------------------

def layer_costs(graph: Graph, nodes: Sequence[Node], bits: Sequence[int], metric: str, a_bits: int = 8,
                target: str = "") -> dict[str, dict[int, float]]:
    """Cost of each layer at each weight width: bytes of weights, BOPs, or seconds / joules
    on `target` as its cost model prices the node annotated with that width."""
    from hwnas.passes.bind_dims import bound_copy

    # Symbolic input dims as 1, and what they decide folded (as pricing binds them).
    bound = bound_copy(graph)
    out: dict[str, dict[int, float]] = {n.name: {} for n in nodes}
    if metric in ("size", "bops"):
        for n in nodes:
            w = n.operand(1).const
            assert w is not None  # quantizable: a constant weight
            macs = 0
            if metric == "bops":
                counts = op_counts(bound.node_by_name(n.name))
                if counts is None:
                    raise PipelineError(f"quantize-mixed: layer '{n.name}' ({n.op}): its MACs are not known (its "
                                        "sizes stay symbolic with the input dims at 1), so metric=bops cannot "
                                        "price it; metric=size can")
                macs = counts.macs
            for b in bits:
                out[n.name][b] = w.size * b / 8 if metric == "size" else macs * b * a_bits
        return out
    if not target:
        raise PipelineError(f"quantize-mixed: metric={metric} needs target=NAME")
    from hwnas.backends.cost import estimate
    from hwnas.ir.annotations import QuantSpec

    for b in bits:
        g = copy.deepcopy(bound)
        for n in nodes:
            g.node_by_name(n.name).ann.quant = QuantSpec(w_bits=b, a_bits=a_bits)
        report = estimate(g, target)
        per_node = {c.node: c for c in report.nodes}
        for n in nodes:
            c = per_node[n.name]
            value = c.latency_s if metric == "latency" else c.energy_j
            out[n.name][b] = float(value or 0.0)
    return out


# -- allocation -------------------------------------------------------------------------------

def allocate(sens: Mapping[str, Mapping[int, float]], costs: Mapping[str, Mapping[int, float]],
             budget: float) -> Allocation:
    """The exact minimum of Σ Ω_l(b_l) subject to Σ cost_l(b_l) ≤ budget (scipy MILP)."""
    layers = list(sens)
    choices = [(name, b) for name in layers for b in sorted(sens[name])]
    c = np.array([sens[n][b] for n, b in choices])
    cost = np.array([costs[n][b] for n, b in choices])
    one = np.zeros((len(layers), len(choices)))
    for j, (n, _) in enumerate(choices):
        one[layers.index(n), j] = 1
    constraints = [LinearConstraint(one, 1, 1), LinearConstraint(cost[None, :], -np.inf, budget)]
    res = milp(c, constraints=constraints, integrality=np.ones(len(choices)), bounds=Bounds(0, 1))
    if res.x is None:
        cheapest = sum(min(costs[n].values()) for n in layers)
        raise PipelineError(f"quantize-mixed: no allocation fits the budget ({budget:.4g}; the narrowest widths "
                            f"everywhere cost {cheapest:.4g})")
    bits = {n: b for (n, b), xv in zip(choices, res.x, strict=True) if xv > 0.5}
    return Allocation(bits, sum(sens[n][b] for n, b in bits.items()), sum(costs[n][b] for n, b in bits.items()),
                      budget)


def greedy(sens: Mapping[str, Mapping[int, float]], costs: Mapping[str, Mapping[int, float]],
           budget: float) -> Allocation:
    """The baseline: start every layer at its narrowest width and keep widening the layer
    whose next step up removes the most sensitivity per unit of added cost, while the
    budget holds (the knapsack greedy; it fills the budget but may miss the optimum)."""
    bits = {n: min(s) for n, s in sens.items()}
    total = sum(costs[n][b] for n, b in bits.items())
    if total > budget + 1e-12:
        raise PipelineError(f"quantize-mixed: no allocation fits the budget ({budget:.4g}; the narrowest widths "
                            f"everywhere cost {total:.4g})")
    while True:
        best, best_rate = None, -math.inf
        for n, b in bits.items():
            wider = [x for x in sens[n] if x > b]
            if not wider:
                continue
            nb = min(wider)
            extra = costs[n][nb] - costs[n][b]
            if total + extra > budget + 1e-12:
                continue
            gain = sens[n][b] - sens[n][nb]
            rate = gain / extra if extra > 0 else math.inf
            if rate > best_rate:
                best, best_rate = (n, nb), rate
        if best is None:
            break
        n, nb = best
        total += costs[n][nb] - costs[n][bits[n]]
        bits[n] = nb
    return Allocation(bits, sum(sens[n][b] for n, b in bits.items()), total, budget)


@register_pass
@dataclass(frozen=True)
class QuantizeMixed(Pass):
    """Per-layer weight widths from `bits` (default 2 to 8) that minimize the summed
    sensitivity (`sensitivity=perturbation`: the output change when that layer alone is
    quantized; or `hessian`: Hutchinson trace × quantization error, HAWQ's proxy) within
    `budget` × the cost of the widest width, the cost being `metric` (size, bops, or latency
    / energy on `target`). Activations get `a_bits`. Calibration inputs come from `calib`
    (as for quantize): sensitivities use the first `samples` of them, and the Hessian's
    loss the array `labels` when the .npz has one (the model's own predictions, with a
    warning, when not); the ranges are then calibrated on all of them and the nodes
    annotated as quantize does. A warning states the bits chosen per layer and the cost
    against the budget (`allocate(graph).summary()` returns it). Perturbation is the
    default: in tools/bench/compression.py it matched or beat the Hessian proxy at every
    budget (EfficientNet-Lite0 at half the 8-bit size: 82.5% top-1 agreement against 0%)."""

    name = "quantize-mixed"
    tolerance = math.inf
    budget: float = 0.5
    metric: Metric = "size"
    bits: str = "2,3,4,5,6,7,8"
    a_bits: int = 8
    sensitivity: Literal["hessian", "perturbation"] = "perturbation"
    target: str = ""
    calib: str = ""
    samples: int = 32
    method: Literal["minmax", "percentile", "mse"] = "minmax"

    def __post_init__(self) -> None:
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"budget must be in (0, 1] (a share of the widest width's cost), not {self.budget}")
        check_bits("a_bits", self.a_bits)
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, not {self.samples}")
        parse_bits(self.bits)
        if self.metric in ("latency", "energy") and not self.target:
            raise ValueError(f"metric={self.metric} needs target=NAME")
        if self.target:
            try:
                load_target(self.target).check_integer_bits((*parse_bits(self.bits), self.a_bits))
            except TargetError as e:
                raise ValueError(str(e)) from None

    def run(self, graph: Graph) -> PassResult:
        _, materialized = prepare_layers(graph, self.name)
        allocation = self.allocate(graph)
        if not allocation.bits:
            return PassResult(graph, materialized)
        warnings.warn(f"{self.name}: {allocation.summary()}", stacklevel=2)
        layers = {n: (b, self.a_bits) for n, b in allocation.bits.items()}
        # Ranges from every calibration sample (sensitivities take the first `samples`).
        changed = quantize_layers(graph, layers, method=self.method, calib=self.calib, samples=0)
        return PassResult(graph, changed or materialized)

    def allocate(self, graph: Graph, x: np.ndarray | None = None, labels: np.ndarray | None = None,
                 solver: str = "milp") -> Allocation:
        """The allocation this pass would make on GRAPH (its `summary()` says what it chose),
        with sensitivities on inputs X (default: the first `samples` of `calib`) and LABELS
        (default: the calibration data's `labels` array, if any)."""
        bits = parse_bits(self.bits)
        nodes = [n for n in graph.nodes if quantizable(n)]
        if not nodes:
            return Allocation({}, 0.0, 0.0, 0.0, self.metric)
        from hwnas.passes.sensitivity import sensitivities  # torch: only when allocating

        if x is None:
            x, given = _calibration_inputs(graph, self.calib, self.samples)
            labels = given if labels is None else labels
        try:
            sens = sensitivities(graph, nodes, bits, x, self.sensitivity, labels, w_method=self.method)
        except RuntimeError as e:  # torch: the inputs do not fit the model (a dim of 1 where it pools)
            raise QuantizeError(f"quantize-mixed: graph '{graph.name}' cannot run on its calibration inputs "
                                f"({first_line(e)}){ones_hint(graph, self.calib)}") from None
        costs = layer_costs(graph, nodes, bits, self.metric, self.a_bits, self.target)
        full = sum(costs[n.name][max(bits)] for n in nodes)
        budget = self.budget * full
        cheapest = sum(min(costs[n.name].values()) for n in nodes)
        if cheapest > budget * (1 + 1e-9):
            saving = 1 - cheapest / full if full > 0 else 0.0
            if saving < 0.01:  # the cost model prices every width alike (an int8 datapath runs them all)
                where = f"target '{self.target}' runs" if self.target else "the cost model prices"
                raise PipelineError(f"quantize-mixed: {where} every weight width in {self.bits} at the same "
                                    f"{self.metric} (the narrowest everywhere saves {saving:.2%}), so narrower "
                                    f"weights cannot meet a {self.metric} budget of {self.budget:g}; use metric=size "
                                    "or bops")
            raise PipelineError(f"quantize-mixed: no allocation fits the budget ({self.budget:g} of "
                                f"{_amount(self.metric, full)}); the narrowest widths everywhere cost "
                                f"{_amount(self.metric, cheapest)}, {cheapest / full:.1%} of it")
        chosen = (allocate if solver == "milp" else greedy)(sens, costs, budget)
        return dataclasses.replace(chosen, metric=self.metric, full=full)


def _calibration_inputs(graph: Graph, calib: str, samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The first `samples` calibration inputs, and their labels when the data has them."""
    if len(graph.inputs) != 1:
        raise PipelineError("quantize-mixed: needs a graph with one input")
    v = graph.inputs[0]
    if calib:
        data, labels = calibration_set(graph, calib)
        x = data[v.name]
        if len(x) > samples:
            warnings.warn(f"quantize-mixed: sensitivities use the first {samples} of the {len(x)} calibration "
                          f"samples (samples={samples}); activation ranges use all of them", stacklevel=3)
        return x[:samples], None if labels is None else labels[:samples]
    warnings.warn(f"quantize-mixed: no calibration data for graph '{graph.name}'; sensitivities come from random "
                  "normal inputs (give calib=FILE.npz or --calib-data)", stacklevel=3)
    if v.shape is None:
        raise PipelineError(f"quantize-mixed: input '{v.name}' has an unknown rank; give calib=FILE.npz")
    # As quantize's random inputs: symbolic dims as `compile --dims` sizes them (`RANDOM_DIMS`),
    # else 1, with `samples` rows where the model's batch dim is symbolic.
    shape = [d if isinstance(d, int) else 1 for d in sized_shape(v.name, v.shape, RANDOM_DIMS.get() or {})]
    if shape and not isinstance(v.shape[0], int):
        shape[0] = samples
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32), None
