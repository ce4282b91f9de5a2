"""The static memory plan: one arena, an offset per activation buffer.

The buffers, their sizes and their lifetimes are the MCU cost model's own
(`hwnas.backends.cost.mcu.schedule`: its execution order, views aliased, element-wise ops
in place where safe, every tensor at the width it is stored in), so the plan's lower bound
is the peak SRAM for activations the cost model reports. What is left here is packing:
buffers live at the same step must not overlap. Greedy placement (largest first, or by
first use, each at the lowest free offset: TFLite Micro's greedy planner) reaches the peak
on chains and residual blocks; where no greedy order does, scipy's MILP solver places them
exactly (time-limited), and the plan says whether the arena equals the peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.backends.cost.liveness import Schedule
from hwnas.ir.graph import Node, Value


@dataclass(frozen=True)
class MemoryPlan:
    """Offsets of every activation buffer of a schedule in one arena."""

    order: list[Node]
    offsets: dict[str, int]
    """Value name -> arena offset (views and in-place outputs share their buffer's)."""
    buffer_of: dict[str, int]
    """Value name -> buffer index in the schedule."""
    peak_bytes: int
    """Largest sum of buffers live at one step: the lower bound on any arena (the cost
    model's peak SRAM for activations)."""
    arena_bytes: int

    def offset(self, v: Value) -> int:
        """The arena offset of a run-time value."""
        return self.offsets[v.name]


def plan_memory(schedule: Schedule, milp_seconds: float = 10.0) -> MemoryPlan:
    """Offsets for the buffers of `schedule` in one arena, as small as packing allows."""
    bufs = schedule.buffers
    sizes = [b.nbytes for b in bufs]
    first = [b.first for b in bufs]
    last = [b.last for b in bufs]
    peak = max((schedule.live_bytes(t) for t in range(-1, len(schedule.order))), default=0)
    offsets = _place(sizes, first, last, peak, milp_seconds)
    by_value = {v.name: i for i, b in enumerate(bufs) for v in b.values}
    arena = max((o + s for o, s in zip(offsets, sizes, strict=True)), default=0)
    return MemoryPlan(list(schedule.order), {name: offsets[i] for name, i in by_value.items()}, by_value, peak, arena)


def _overlap(first: list[int], last: list[int], a: int, b: int) -> bool:
    return first[a] <= last[b] and first[b] <= last[a]


def _greedy(sizes: list[int], first: list[int], last: list[int], order: list[int]) -> list[int]:
    offsets = [0] * len(sizes)
    placed: list[int] = []
    for b in order:
        busy = sorted((offsets[p], offsets[p] + sizes[p]) for p in placed if _overlap(first, last, p, b))
        at = 0
        for lo, hi in busy:
            if at + sizes[b] <= lo:
                break
            at = max(at, hi)
        offsets[b] = at
        placed.append(b)
    return offsets


def _place(sizes: list[int], first: list[int], last: list[int], peak: int, milp_seconds: float) -> list[int]:
    idx = list(range(len(sizes)))
    tries = [sorted(idx, key=lambda b: (-sizes[b], first[b])),
             sorted(idx, key=lambda b: (first[b], -sizes[b])),
             sorted(idx, key=lambda b: (-(last[b] - first[b]) * sizes[b], first[b]))]
    best = min((_greedy(sizes, first, last, o) for o in tries),
               key=lambda offs: max((o + s for o, s in zip(offs, sizes, strict=True)), default=0))
    arena = max((o + s for o, s in zip(best, sizes, strict=True)), default=0)
    if arena <= peak or milp_seconds <= 0:
        return best
    exact = _milp(sizes, first, last, peak, arena, milp_seconds)
    return exact if exact is not None else best


def _milp(sizes: list[int], first: list[int], last: list[int], peak: int, upper: int,
          seconds: float) -> list[int] | None:
    """Offsets minimizing the arena: x_b offsets, A the arena, for each overlapping pair a
    binary z choosing which lies below (big-M on the greedy arena)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(sizes)
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n) if _overlap(first, last, a, b)]
    nv = n + 1 + len(pairs)  # x_0..x_{n-1}, A, z per pair
    rows: list[np.ndarray] = []
    hi: list[float] = []  # every row is  row . vars <= hi
    for b in range(n):  # x_b + size_b <= A
        r = np.zeros(nv)
        r[b], r[n] = 1, -1
        rows.append(r)
        hi.append(-sizes[b])
    for k, (a, b) in enumerate(pairs):
        z = n + 1 + k
        r = np.zeros(nv)  # x_a + s_a <= x_b + M z
        r[a], r[b], r[z] = 1, -1, -upper
        rows.append(r)
        hi.append(-sizes[a])
        r = np.zeros(nv)  # x_b + s_b <= x_a + M (1 - z)
        r[b], r[a], r[z] = 1, -1, upper
        rows.append(r)
        hi.append(upper - sizes[b])
    c = np.zeros(nv)
    c[n] = 1
    integrality = np.r_[np.ones(n + 1), np.ones(len(pairs))]
    bounds = Bounds(np.r_[np.zeros(n), peak, np.zeros(len(pairs))],
                    np.r_[np.full(n, upper), upper, np.ones(len(pairs))])
    res = milp(c, constraints=LinearConstraint(np.array(rows), -np.inf, np.array(hi)), integrality=integrality,
               bounds=bounds, options={"time_limit": seconds})
    if res.x is None or res.x[n] >= upper:
        return None
    return [int(round(v)) for v in res.x[:n]]
