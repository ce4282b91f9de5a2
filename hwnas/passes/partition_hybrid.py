"""`partition-hybrid`: which weight layers of a graph go on an analog target's crossbar tiles and
which stay on its digital core, chosen from what each side costs and how much accuracy each
layer loses on tiles.

Costs come from the analog target's cost model, each weight layer priced on both sides: on tiles
(DACs, array reads, ADCs, and the activations it moves between the digital core and its tiles:
inputs in, partial sums back, staged in the digital core's memory as the model routes them) and
on the digital core (its roofline). Every other op is digital either way, so a partition's
energy and latency are the rest of the graph's plus the sum of its layers' sides.

The choice is a 0-1 program (scipy's MILP, HiGHS): minimize energy (or latency, or both
normalized to all-digital) subject to the chip's tile budget (a knapsack over the layers' tiles)
and an accuracy-drop budget over the layers' measured drops alone on tiles, a connected pair's
extra drop counted when both of its layers are analog (`solve`). The decision is written as
`Placement` annotations: digital layers say why, prefixed "partition:", so the cost report and
the HTML dump show it.

Sensitivity is measured by simulation on aihwkit tiles, which passes do not run:
`hwnas analog partition --json FILE` (`hwnas.analog.partition.partition_hybrid`) measures each
layer alone and each two connected layers together, simulates the chosen set whole and cuts off
sets that lose more than the budget. The pass reads those measurements back from FILE
(`sensitivity=FILE`) and solves again on the graph at hand, with the cut-off sets of FILE's
rounds, so a pipeline can hold the decision; it prices with the cost model but simulates
nothing, and says so.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from hwnas.backends.cost import estimate
from hwnas.backends.cost.report import format_joules, format_seconds
from hwnas.backends.target import Target, load_target
from hwnas.errors import PipelineError
from hwnas.ir.annotations import Placement
from hwnas.ir.graph import Graph
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.bind_dims import bound_copy
from hwnas.passes.map_analog import MapAnalog

Objective = Literal["energy", "latency", "both"]
OBJECTIVES: tuple[Objective, ...] = ("energy", "latency", "both")


@dataclass(frozen=True)
class LayerSides:
    """One weight layer on each side: its cost on tiles and on the digital core, the tiles it takes,
    and its accuracy drop alone on tiles at the partition's time (a fraction: 0.01 is 1 point)."""

    name: str
    op: str
    tiles: int
    analog_energy_j: float
    analog_latency_s: float
    digital_energy_j: float
    digital_latency_s: float
    transfer_bytes: int
    """Activations moved between the digital core and its tiles per inference when analog."""
    drop: float = 0.0
    drop_std: float = 0.0
    fixed: str = ""
    """Why it can only be digital ('' when it can go on tiles)."""


@dataclass
class Partition:
    """A partition of a graph's weight layers between tiles and the digital core, with everything it
    was decided from, so any other set of analog layers can be priced beside it."""

    mapper: MapAnalog
    """How layers go on tiles (target, tile size and count)."""
    t_s: float
    chip_tiles: int
    max_drop: float
    objective: Objective
    layers: dict[str, LayerSides]
    analog: tuple[str, ...]
    rest_energy_j: float
    """Energy of the ops that are digital whatever the partition."""
    rest_latency_s: float
    reference: float
    """The float model's accuracy on the sample data."""
    pairs: dict[tuple[str, str], float] = field(default_factory=dict)
    """Per edge (u, v) of the graph of weight layers: what the two lose on tiles together beyond
    their drops alone (at least 0): one's noise feeding the other's."""
    measured_drop: float | None = None
    """The chosen partition's drop simulated whole (None when not simulated)."""
    rounds: list[tuple[tuple[str, ...], float, float]] = field(default_factory=list)
    """Each simulated candidate: (analog layers, predicted drop, measured drop)."""

    def energy_j(self, analog: Iterable[str] | None = None) -> float:
        """Energy of one inference with `analog` (default: the chosen layers) on tiles."""
        on = set(self.analog if analog is None else analog)
        return self.rest_energy_j + sum(s.analog_energy_j if n in on else s.digital_energy_j
                                        for n, s in self.layers.items())

    def latency_s(self, analog: Iterable[str] | None = None) -> float:
        """Latency of one inference with `analog` (default: the chosen layers) on tiles."""
        on = set(self.analog if analog is None else analog)
        return self.rest_latency_s + sum(s.analog_latency_s if n in on else s.digital_latency_s
                                         for n, s in self.layers.items())

    def tiles(self, analog: Iterable[str] | None = None) -> int:
        """Tiles `analog` (default: the chosen layers) take."""
        return sum(self.layers[n].tiles for n in (self.analog if analog is None else analog))

    def predicted_drop(self, analog: Iterable[str] | None = None) -> float:
        """The layers' drops alone on tiles (negative ones, noise, count as 0) plus the extra drop of
        each connected pair of them."""
        on = set(self.analog if analog is None else analog)
        return (sum(max(self.layers[n].drop, 0.0) for n in on)
                + sum(q for (u, v), q in self.pairs.items() if u in on and v in on))

    def score(self, analog: Iterable[str] | None = None) -> float:
        """The objective the partition minimizes: energy (J), latency (s), or both as shares of
        all-digital's, added."""
        e, lat = self.energy_j(analog), self.latency_s(analog)
        if self.objective == "energy":
            return e
        if self.objective == "latency":
            return lat
        return e / self.energy_j(()) + lat / self.latency_s(())

    @property
    def candidates(self) -> tuple[str, ...]:
        """Layers that can go on tiles."""
        return tuple(n for n, s in self.layers.items() if not s.fixed)

    def gain(self, name: str) -> float:
        """How much `score` changes when layer `name` moves from the digital core onto tiles."""
        s = self.layers[name]
        de, dl = s.analog_energy_j - s.digital_energy_j, s.analog_latency_s - s.digital_latency_s
        if self.objective == "energy":
            return de
        if self.objective == "latency":
            return dl
        return de / self.energy_j(()) + dl / self.latency_s(())

    def reason(self, name: str) -> str:
        """Why layer `name` is digital in this partition."""
        s = self.layers[name]
        if s.fixed:
            return s.fixed
        day = f"{self.t_s / 86400:g}-day" if self.t_s >= 86400 else f"{self.t_s:g}-s"
        if self.gain(name) >= 0:
            what = {"energy": "cheaper", "latency": "faster",
                    "both": "better for energy and latency together"}[self.objective]
            return (f"partition: {what} on the digital core (energy {format_joules(s.digital_energy_j)}, latency "
                    f"{format_seconds(s.digital_latency_s)}; on {s.tiles} tile{'s' if s.tiles != 1 else ''} "
                    f"{format_joules(s.analog_energy_j)}, "
                    f"{format_seconds(s.analog_latency_s)})")
        if s.drop > self.max_drop - self.predicted_drop():
            return (f"partition: loses {s.drop * 100:.2f} pt alone on tiles after {day} drift (budget "
                    f"{self.max_drop * 100:g} pt, {self.predicted_drop() * 100:.2f} pt taken)")
        if s.tiles > self.chip_tiles - self.tiles():
            return f"partition: needs {s.tiles} tiles, {self.chip_tiles - self.tiles()} of {self.chip_tiles} left"
        over = [m for chosen, _, m in self.rounds if name in chosen and m > self.max_drop]
        if over:
            return (f"partition: a partition with it lost {over[-1] * 100:.2f} pt simulated whole after {day} drift "
                    f"(budget {self.max_drop * 100:g} pt)")
        return "partition: the accuracy budget buys more savings on other layers"

    def summary(self) -> str:
        """One line: layers on tiles, tiles, energy and latency against all-digital and all-analog,
        the predicted and measured drop."""
        every, e, lat = self.candidates, format_joules, format_seconds
        line = (f"{len(self.analog)} of {len(self.layers)} weight layers on {self.tiles()} of {self.chip_tiles} tiles; "
                f"energy {e(self.energy_j())} (all-digital {e(self.energy_j(()))}, all-analog "
                f"{e(self.energy_j(every))}), "
                f"latency {lat(self.latency_s())} (all-digital {lat(self.latency_s(()))}, all-analog "
                f"{lat(self.latency_s(every))}); predicted drop {self.predicted_drop() * 100:.2f} pt")
        if self.measured_drop is not None:
            line += f", measured {self.measured_drop * 100:.2f} pt"
        return line + f" (budget {self.max_drop * 100:g} pt)"


def layer_sides(graph: Graph, target: Target, plan_pass: MapAnalog) -> tuple[dict[str, LayerSides], float, float]:
    """Every weight layer priced on tiles (as `plan_pass` places it) and on the digital core, and the
    energy and latency of the rest of the graph."""
    plan = plan_pass.plan(graph)
    priced = bound_copy(graph)
    on_tiles, off = priced.copy(), priced.copy()
    for g, analog in ((on_tiles, True), (off, False)):
        for n in g.nodes:
            p = plan.placements.get(n.name)
            if p is not None:
                n.ann.placement = p if analog else Placement(plan.target, analog=False, reason="priced digital")
    a, d = estimate(on_tiles, target), estimate(off, target)
    sides: dict[str, LayerSides] = {}
    for name, p in plan.placements.items():
        ca, cd = a.node(name), d.node(name)
        sides[name] = LayerSides(name, plan.ops[name], p.tiles or 0, ca.energy_j or 0.0, ca.latency_s or 0.0,
                                 cd.energy_j or 0.0, cd.latency_s or 0.0, int(ca.resources.get("transfer_bytes", 0)),
                                 fixed="" if p.analog else p.reason)
    rest_e = (d.energy_j or 0.0) - sum(s.digital_energy_j for s in sides.values())
    rest_l = (d.latency_s or 0.0) - sum(s.digital_latency_s for s in sides.values())
    return sides, rest_e, rest_l


def place(graph: Graph, part: Partition, analog: Iterable[str] | None = None) -> bool:
    """Write `analog` (default: the partition's choice) as Placement annotations on `graph`: those
    layers on tiles numbered from 0 in graph order, every other weight layer digital with its
    reason. Returns whether any annotation changed."""
    on = set(part.analog if analog is None else analog)
    unknown = on - set(part.candidates)
    if unknown:
        raise PipelineError(f"partition: {', '.join(sorted(unknown))} cannot go on tiles")
    plan = part.mapper.plan(graph)
    first, changed = 0, False
    for n in graph.nodes:
        p = plan.placements.get(n.name)
        if p is None:
            continue
        if n.name in on:
            shift = first - min(p.tile_ids)
            p = dataclasses.replace(p, tile_ids=tuple(t + shift for t in p.tile_ids),
                                    blocks=tuple((b[0] + shift, *b[1:]) for b in p.blocks))
            first += p.tiles or 0
        elif p.analog:
            p = Placement(part.mapper.target, analog=False, reason=part.reason(n.name) if analog is None else
                          "partition: placed on the digital core")
        if n.ann.placement != p:
            n.ann.placement, changed = p, True
    return changed


def layer_edges(graph: Graph, layers: Iterable[str]) -> list[tuple[str, str]]:
    """The graph of weight layers: (u, v) where u's output reaches v through ops that are not
    among `layers`, in graph order."""
    names = set(layers)
    g = graph.nx()
    edges: list[tuple[str, str]] = []
    for u in graph.nodes:
        if u.name not in names:
            continue
        seen, stack = set(), list(g.successors(u))
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n.name in names:
                edges.append((u.name, n.name))
            else:
                stack.extend(g.successors(n))
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(set(edges), key=lambda e: (order[e[0]], order[e[1]]))


def solve(part: Partition, max_drop: float, cuts: Iterable[tuple[str, ...]] = ()) -> tuple[str, ...]:
    """The analog layers minimizing `part.score` within the chip's tiles and a predicted drop of at
    most `max_drop`, excluding each of `cuts` and its supersets: a 0-1 program (scipy's MILP) with
    one variable per layer and, per connected pair, y >= x_u + x_v - 1 carrying their extra drop."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # a second's import, not on the CLI's fast paths

    names = part.candidates
    if not names:
        return ()
    pairs = [(names.index(u), names.index(v), q) for (u, v), q in part.pairs.items()
             if q > 0 and u in names and v in names]
    n, m = len(names), len(pairs)
    sides = [part.layers[name] for name in names]
    rows = [[s.tiles for s in sides] + [0] * m, [max(s.drop, 0.0) for s in sides] + [q for *_, q in pairs]]
    upper = [float(part.chip_tiles), max(max_drop, 0.0) + 1e-12]
    for cut in cuts:
        rows.append([1.0 if name in cut else 0.0 for name in names] + [0] * m)
        upper.append(len(cut) - 1.0)
    for k, (i, j, _) in enumerate(pairs):
        row = [0.0] * (n + m)
        row[i] = row[j] = 1.0
        row[n + k] = -1.0
        rows.append(row)
        upper.append(1.0)
    gain = np.array([part.gain(name) for name in names])
    c = np.concatenate([gain / (np.abs(gain).max() or 1.0), np.zeros(m)])  # scaled: HiGHS's tolerances are absolute
    res = milp(c, constraints=LinearConstraint(np.array(rows, dtype=float), -np.inf, np.array(upper)),
               integrality=np.r_[np.ones(n), np.zeros(m)], bounds=Bounds(0, 1))
    if res.x is None:  # all-digital always fits; only a numerical failure gets here
        return ()
    return tuple(name for name, x in zip(names, res.x[:n], strict=True) if x > 0.5)


@register_pass
@dataclass(frozen=True)
class PartitionHybrid(Pass):
    """Places each weight layer on tiles or on the digital core of `target` from the sensitivities
    `hwnas analog partition --json FILE` measured (`sensitivity=FILE`: each layer's drop alone on
    tiles, each connected pair's extra drop, and the sets its rounds cut off): the 0-1 program of
    `solve` over this graph's costs, within the chip's tiles (`tiles`, 0: the target's) and a
    drop budget of `max_drop` points (default: FILE's), minimizing `objective` (default: FILE's).
    A layer FILE has no measurement for, or one whose op differs, is an error naming it. The
    chosen set's drop is predicted from the measurements (simulated only if FILE's rounds
    simulated that very set); the summary warning says which."""

    name = "partition-hybrid"
    sensitivity: str = ""
    target: str = ""
    max_drop: float = -1.0
    objective: str = ""
    tiles: int = 0

    def __post_init__(self) -> None:
        if not self.sensitivity:
            raise ValueError("sensitivity= names the JSON file `hwnas analog partition --json` wrote")
        if self.max_drop >= 100:
            raise ValueError(f"max_drop is in points of accuracy below 100, not {self.max_drop}")
        if self.objective not in ("", *OBJECTIVES):
            raise ValueError(f"objective must be energy, latency or both, not {self.objective!r}")
        if self.tiles < 0:
            raise ValueError(f"tiles must be positive (0: the target's), not {self.tiles}")

    def run(self, graph: Graph) -> PassResult:
        sens = read_sensitivity(self.sensitivity)
        spec = self.target or sens.target
        tgt = load_target(spec)
        mapper = MapAnalog(target=spec, tiles=self.tiles)
        sides, rest_e, rest_l = layer_sides(graph, tgt, mapper)
        for name, s in list(sides.items()):
            m = sens.layers.get(name)
            if m is None or m.op != s.op:
                raise PipelineError(f"{self.name}: {self.sensitivity} has no measurement of {s.op} '{name}' "
                                    f"(it holds {', '.join(sorted(sens.layers)) or 'none'}); measure this graph "
                                    "with `hwnas analog partition --json`")
            if not s.fixed and m.drop is not None:
                sides[name] = dataclasses.replace(s, drop=m.drop, drop_std=m.drop_std)
        max_drop = sens.max_drop if self.max_drop < 0 else self.max_drop / 100
        objective = _objective(self.objective) if self.objective else sens.objective
        part = Partition(mapper, sens.t_s, mapper.hardware().tiles, max_drop, objective, sides, (), rest_e, rest_l,
                         sens.reference, pairs={k: q for k, q in sens.pairs.items() if k[0] in sides and k[1] in sides})
        part.rounds = [r for r in sens.rounds if r[2] > max_drop]
        part.analog = solve(part, max_drop, [chosen for chosen, _, _ in part.rounds])
        simulated = [m for chosen, _, m in sens.rounds if set(chosen) == set(part.analog)]
        part.measured_drop = simulated[0] if simulated else None
        changed = place(graph, part)
        if changed:
            how = ("simulated whole in the measuring run" if simulated else
                   "predicted from the per-layer measurements, not simulated")
            warnings.warn(f"{self.name}: {part.summary()}; drop {how} ({self.sensitivity})", stacklevel=2)
        return PassResult(graph, changed)


# The sensitivity file: `sensitivity_doc` writes it, `read_sensitivity` reads it back.
REQUIRED_KEYS = ("target", "t_s", "max_drop", "layers", "pairs")
"""What a sensitivity file must hold; `objective` (default energy), `reference_accuracy` (0) and
`rounds` (none) may be absent."""


@dataclass(frozen=True)
class MeasuredLayer:
    """One layer's entry in a sensitivity file: its op, and its drop alone on tiles (None: not
    measured, as for a layer that can only be digital) with the spread over programmings."""

    op: str
    drop: float | None
    drop_std: float = 0.0


@dataclass(frozen=True)
class Sensitivity:
    """A sensitivity file as the pass reads it: the target and time the drops were measured on and
    at, the default budget (a fraction) and objective, each layer's drop alone, each connected
    pair's extra drop, and each simulated round (analog layers, predicted drop, measured drop)."""

    target: str
    t_s: float
    max_drop: float
    objective: Objective
    reference: float
    layers: dict[str, MeasuredLayer]
    pairs: dict[tuple[str, str], float]
    rounds: list[tuple[tuple[str, ...], float, float]]


def sensitivity_doc(part: Partition, *, target: str, model: str | None, task: str, pipeline: str, split: str,
                    samples: int, repeats: int) -> dict[str, object]:
    """The JSON document `hwnas analog partition --json` writes for `part`, measured with `task`'s
    `samples` samples of `split` over `repeats` programmings after `pipeline`: what
    `read_sensitivity` reads back, and the decision's figures beside it."""
    return {"model": model, "task": task, "target": target, "pipeline": pipeline, "t_s": part.t_s, "split": split,
            "samples": samples, "repeats": repeats, "objective": part.objective, "max_drop": part.max_drop,
            "chip_tiles": part.chip_tiles, "analog": list(part.analog), "tiles": part.tiles(),
            "reference_accuracy": part.reference, "predicted_drop": part.predicted_drop(),
            "measured_drop": part.measured_drop,
            "energy_j": {"hybrid": part.energy_j(), "all_digital": part.energy_j(()),
                         "all_analog": part.energy_j(part.candidates)},
            "latency_s": {"hybrid": part.latency_s(), "all_digital": part.latency_s(()),
                          "all_analog": part.latency_s(part.candidates)},
            "layers": {n: {"op": s.op, "analog": n in part.analog, "tiles": s.tiles, "drop": s.drop,
                           "drop_std": s.drop_std, "analog_energy_j": s.analog_energy_j,
                           "digital_energy_j": s.digital_energy_j, "analog_latency_s": s.analog_latency_s,
                           "digital_latency_s": s.digital_latency_s, "transfer_bytes": s.transfer_bytes,
                           "why_digital": None if n in part.analog else part.reason(n)}
                       for n, s in part.layers.items()},
            "pairs": [{"layers": list(k), "extra_drop": q} for k, q in part.pairs.items()],
            "rounds": [{"analog": list(a), "predicted_drop": p, "measured_drop": m} for a, p, m in part.rounds]}


def _objective(value: object, where: str = "") -> Objective:
    """`value` as an objective; any other value is a PipelineError naming it (and `where`)."""
    for o in OBJECTIVES:
        if value == o:
            return o
    raise PipelineError(f"partition-hybrid: {where}objective must be energy, latency or both, not {value!r}")


def read_sensitivity(path: str | Path) -> Sensitivity:
    """The JSON `hwnas analog partition --json` writes (`sensitivity_doc`), checked for what the pass
    reads; a file that is missing or holds something else (an objective the pass does not know
    included) is a PipelineError naming it."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise PipelineError(f"partition-hybrid: cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise PipelineError(f"partition-hybrid: {path} is not JSON: {e}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise PipelineError(f"partition-hybrid: {path} is not a sensitivity file of `hwnas analog partition --json` "
                            f"(no {', '.join(missing)})")
    objective = _objective(doc.get("objective", "energy"), f"{path}: ")
    try:
        return Sensitivity(
            str(doc["target"]), float(doc["t_s"]), float(doc["max_drop"]), objective,
            float(doc.get("reference_accuracy", 0.0)),
            {str(n): MeasuredLayer(str(m.get("op", "")), None if m.get("drop") is None else float(m["drop"]),
                                   float(m.get("drop_std", 0.0))) for n, m in doc["layers"].items()},
            {(p["layers"][0], p["layers"][1]): float(p["extra_drop"]) for p in doc["pairs"]},
            [(tuple(r["analog"]), float(r["predicted_drop"]), float(r["measured_drop"]))
             for r in doc.get("rounds", [])])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        raise PipelineError(f"partition-hybrid: {path} is not a sensitivity file of `hwnas analog partition --json` "
                            f"({type(e).__name__}: {e})") from None
