"""Sensitivity-based per-group pruning ratios: each channel group is pruned alone at a grid
of ratios on sample inputs; how far the model's outputs move (relative L2) is its
sensitivity. The weight budget uniform pruning at `ratio` would remove is then spent on
the least sensitive groups: one threshold on sensitivity, found by bisection, gives each
group the largest ratio whose sensitivity stays under it."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np

from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.sessions import session
from hwnas.errors import PipelineError
from hwnas.ir.graph import Graph
from hwnas.passes.channels import channel_groups, prune_channels

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs in a real onnxruntime session (one thread: the callers run many).
    A graph with a fixed batch size runs the samples that many at a time."""
    s = session(to_onnx(graph), source=f"graph '{graph.name}'")
    first = graph.inputs[0].type.shape if graph.inputs[0].type is not None else None
    batch = first[0] if first and isinstance(first[0], int) else None
    n = len(next(iter(feeds.values())))
    if batch is None or n <= batch:
        return s.run(None, dict(feeds))
    runs = [s.run(None, {k: a[i : i + batch] for k, a in feeds.items()}) for i in range(0, n - batch + 1, batch)]
    return [np.concatenate(parts) for parts in zip(*runs, strict=True)]


def sample_feeds(graph: Graph, samples: int, seed: int) -> dict[str, np.ndarray]:
    """Standard-normal inputs, `samples` of them along a symbolic batch dim (else the graph's own)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        if v.type is None or v.type.shape is None:
            raise PipelineError(f"input '{v.name}' has an unknown type or rank: no sample inputs for it")
        shape = [d if isinstance(d, int) else samples for d in v.type.shape]
        feeds[v.name] = rng.standard_normal(shape).astype(v.type.dtype.numpy)
    return feeds


def _distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    num = sum(float(np.sum((x - y).astype(np.float64) ** 2)) for x, y in zip(a, b, strict=True))
    den = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in a)
    return math.sqrt(num / max(den, 1e-30))


def sensitivities(graph: Graph, criterion: str, feeds: Mapping[str, np.ndarray],
                  grid: tuple[float, ...] = GRID) -> dict[str, np.ndarray]:
    """Group name → relative output change when that group alone is pruned at each grid
    ratio (made non-decreasing along the grid)."""
    ref = run_graph(graph, feeds)
    out = {}
    for g in channel_groups(graph):
        if not g.components:
            continue
        row = []
        for r in grid:
            if math.floor(r * g.channels + 1e-9) == 0:
                row.append(0.0)
                continue
            trial = copy.deepcopy(graph)
            prune_channels(trial, {g.name: r}, criterion)
            row.append(_distance(ref, run_graph(trial, feeds)))
        out[g.name] = np.maximum.accumulate(np.asarray(row))
    return out


def sensitivity_ratios(graph: Graph, ratio: float, criterion: str = "l1", *, samples: int = 8, seed: int = 0,
                       feeds: Mapping[str, np.ndarray] | None = None,
                       grid: tuple[float, ...] = GRID) -> dict[str, float]:
    """Per-group ratios removing at least the weights uniform `ratio` would, chosen where the
    outputs move least."""
    groups = {g.name: g for g in channel_groups(graph) if g.components}
    if ratio == 0.0 or not groups:
        return {}
    sens = sensitivities(graph, criterion, feeds if feeds is not None else sample_feeds(graph, samples, seed), grid)

    def removed(g_name: str, r: float) -> float:
        return groups[g_name].removable(r) * groups[g_name].cost

    budget = sum(removed(name, ratio) for name in groups)

    def allot(t: float) -> dict[str, float]:
        out = {}
        for name, row in sens.items():
            ok = [r for r, s in zip(grid, row, strict=True) if s <= t]
            out[name] = max(ok) if ok else 0.0
        return out

    thresholds = np.unique(np.concatenate(list(sens.values())))
    lo, hi = 0, len(thresholds) - 1
    while lo < hi:  # the smallest threshold whose allotment meets the budget
        mid = (lo + hi) // 2
        if sum(removed(n, r) for n, r in allot(thresholds[mid]).items()) >= budget:
            hi = mid
        else:
            lo = mid + 1
    return {n: r for n, r in allot(thresholds[lo]).items() if r > 0}
