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

The pricing, the program and the placements live in the `partition-hybrid` pass
(`hwnas.passes.partition_hybrid`, re-exported here); this module adds what passes do not run,
the simulations on aihwkit tiles. The pass reads the measurements this module's command writes
(`hwnas analog partition --json FILE`) and solves again inside a pipeline.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hwnas.analog.convert import AnalogModel, to_analog
from hwnas.analog.evaluate import drift_accuracy
from hwnas.backends.emit.torch import to_torch
from hwnas.backends.target import Target, load_target
from hwnas.errors import PipelineError
from hwnas.ir.graph import Graph
from hwnas.passes.map_analog import MapAnalog
from hwnas.passes.partition_hybrid import LayerSides, Objective, Partition, layer_edges, layer_sides, place, solve

__all__ = ["LayerSides", "Objective", "Partition", "layer_edges", "layer_sides", "partition_hybrid", "place", "solve"]


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
