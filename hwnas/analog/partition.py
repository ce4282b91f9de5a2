"""Hybrid analog/digital partitioning: which weight layers go on the crossbar tiles and which stay on
the digital core, chosen from what each side costs and how much accuracy each layer loses on tiles.

Costs come from the analog target's cost model, each weight layer priced on both sides: on tiles
(DACs, array reads, ADCs, and the activations it moves between the digital core and its tiles:
inputs in, partial sums back, staged in the digital core's memory as the model routes them) and
on the digital core (its roofline). Every other op is digital either way, so a partition's
energy and latency are the rest of the graph's plus the sum of its layers' sides. Sensitivity is
measured: each layer alone on aihwkit tiles, programmed and read `t_s` after programming (drift),
its accuracy on sample data against the float model's, over several programmings; then each two
connected layers (an edge of the graph of weight layers) together, for what one's noise adds to
the other's beyond their drops alone.

The choice is a 0-1 program (scipy's MILP, HiGHS): minimize energy (or latency, or both
normalized to all-digital) subject to the chip's tile budget (a knapsack over the layers' tiles)
and an accuracy-drop budget over the measured drops, a pair's extra drop counted when both of
its layers are analog. Drops still do not add up exactly, so the chosen partition is simulated
whole; while its measured drop is over the budget, that set and every superset of it are cut off
(more analog layers lose no less) and the budget the drops are summed against shrinks by
predicted/measured, then it solves again. The decision is written as `Placement` annotations:
digital layers say why, prefixed "partition:", so the cost report and the HTML dump show it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from hwnas.analog.convert import AnalogModel, to_analog
from hwnas.analog.evaluate import drift_accuracy
from hwnas.backends.cost import estimate
from hwnas.backends.cost.report import format_joules, format_seconds
from hwnas.backends.emit.torch import to_torch
from hwnas.backends.target import Target, load_target
from hwnas.errors import PipelineError
from hwnas.ir.annotations import Placement
from hwnas.ir.graph import Graph
from hwnas.passes.bind_dims import bound_copy
from hwnas.passes.map_analog import MapAnalog

Objective = Literal["energy", "latency", "both"]


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
                    f"{format_seconds(s.digital_latency_s)}; on {s.tiles} tiles {format_joules(s.analog_energy_j)}, "
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


def partition_hybrid(graph: Graph, x: np.ndarray, y: np.ndarray, target: str | Path | Target = "analog-pcm", *,
                     t_s: float = 86400.0, max_drop: float = 0.01, objective: Objective = "energy",
                     repeats: int = 3, rounds: int = 4, tiles: int = 0, tile_rows: int = 0, tile_cols: int = 0,
                     pairs: bool = True, seed: int = 0, batch: int = 1024,
                     on_step: Callable[[str], None] | None = None) -> Partition:
    """Decide per weight layer of `graph` tiles or digital core on `target` (the graph is not
    changed; `place` writes the result). `x`, `y`: sample inputs and the classes a correct model
    gives (labels, or the float model's top-1 for agreement). Each candidate layer is simulated
    alone at `t_s` seconds after programming over `repeats` programmings, and with `pairs` each two
    connected layers together; the chosen set is simulated whole, at most `rounds` times. `tiles`,
    `tile_rows`, `tile_cols`: the chip's (0: the target's). `on_step(what)` is called after each
    simulation."""
    if repeats < 1 or rounds < 1:
        raise PipelineError(f"partition: repeats and rounds must be at least 1, not {repeats} and {rounds}")
    if not 0 <= max_drop < 1:
        raise PipelineError(f"partition: max_drop is a fraction of the samples in [0, 1), not {max_drop}")
    tgt = target if isinstance(target, Target) else load_target(target)
    spec = str(tgt.path or tgt.name) if isinstance(target, Target) else str(target)  # as the user named it
    mapper = MapAnalog(target=spec, tile_rows=tile_rows, tile_cols=tile_cols, tiles=tiles)
    hw = mapper.hardware()
    sides, rest_e, rest_l = layer_sides(graph, tgt, mapper)
    ref = AnalogModel(to_torch(graph), {})
    reference = float((ref.logits(x, batch).argmax(axis=1) == y).mean())
    part = Partition(mapper, t_s, hw.tiles, max_drop, objective, sides, (), rest_e, rest_l, reference)

    def simulate(analog: tuple[str, ...]) -> tuple[float, float, dict[str, str]]:
        g = graph.copy()
        place(g, part, analog)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what aihwkit refuses is in model.digital
            model = to_analog(g, tgt)
        point = drift_accuracy(model, x, y, [t_s], repeats=repeats, seed=seed, batch=batch)[0]
        if on_step is not None:
            on_step(",".join(analog))
        return reference - point.mean, point.std, model.digital

    for name in part.candidates:
        drop, std, refused = simulate((name,))
        why = refused.get(name, "")
        sides[name] = dataclasses.replace(sides[name], drop=drop, drop_std=std, fixed=why)
    for u, v in layer_edges(graph, sides) if pairs else ():
        if not (sides[u].fixed or sides[v].fixed):
            both = simulate((u, v))[0]
            part.pairs[u, v] = max(both - max(sides[u].drop, 0.0) - max(sides[v].drop, 0.0), 0.0)
    cuts: list[tuple[str, ...]] = []
    budget = max_drop
    for _ in range(rounds):
        chosen = solve(part, budget, cuts)
        part.analog = chosen
        if not chosen:
            break
        measured = simulate(chosen)[0]
        predicted = part.predicted_drop(chosen)
        part.rounds.append((chosen, predicted, measured))
        part.measured_drop = measured
        if measured <= max_drop:
            break
        cuts.append(chosen)
        if predicted > 0:
            budget = min(budget, budget * predicted / measured)
    else:  # every round over the budget: all-digital, which loses nothing
        part.analog, part.measured_drop = (), 0.0
    return part
