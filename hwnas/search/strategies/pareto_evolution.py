"""hwnas's default: steady-state elitist evolution with NSGA-II selection and no repeats.

Why this and not Optuna's NSGA-II with its defaults: a tabular or cost-model objective is
deterministic, so evaluating a candidate twice is a wasted evaluation (NSGA-II's generations
repeat many of them in a small space), and waiting for a full generation of 50 before
selecting slows the start. Here every result joins an archive at once; parents are drawn by
binary tournament from the archive's best `population` under NSGA-II's order (constrained
Pareto rank, then crowding distance, so the whole front is spread over); a child is a
uniform crossover of two parents (probability `crossover`) and a one-dimension mutation,
redrawn until it is a candidate never evaluated nor pending. Of `screen` such children the
one a ridge surrogate (`surrogate.Ridge`, refitted on every result) predicts to add the most
hypervolume is evaluated (a plain child with probability `explore`). The benchmark
(tools/bench/search.py) compares it with the others; the settings are the best of a few
tried there (initial 10/20, population 10-40, crossover 0-0.5, with and without screening,
256 screened children, extra-trees instead of ridge, and screening the whole space by
optimistic hypervolume gain under a Bayesian ridge: none of the last three better within
the seeds' spread; crossover 0.3 raised HV/HV* at 300 and 1,000 evaluations on both
problems tried, e.g. drift-energy-pcm 0.963 -> 0.977 and 0.987 -> 0.993 over 3 seeds).

Tried later against the 0.99-at-300 aim, 4 seeds at 300 evaluations, not adopted: (1) letting it
see the cost model's figures of unevaluated candidates (exact hardware objectives in the
screening, the surrogate only for accuracies): acc-latency-m7 0.992, drift-energy-pcm 0.979,
acc-params 0.977, acc-drift-host 0.973, no better than blind (0.993/0.982/0.984/0.974); with a
start stratified over the cost quantiles instead of random (20 cells): 0.996/0.989/0.986/0.975,
+0.001 to +0.006, short of 0.99 on two pairs, at the price of a second information channel the
other strategies lack; adding the 10 cheapest cells, 30 initial, 256 screened children, a
population of 40, no exploration, or a swap move (two edges exchange ops, cost kept): within
the seeds' spread. (2) Expected hypervolume improvement over all 15,625 cells under a Hamming-
kernel GP with exact costs: 0.988/0.984/0.886 (the cost reference point at the front's edge
starves the costly end; at the space's edge, drift-energy-pcm falls to 0.957). The surrogates
rank NAS-Bench-201's top decile no better than chance (Kendall tau within the top 10% of 300
random cells: ridge 0.03, GP 0.03-0.05, forests -0.04-0.13), so at 300 evaluations the
remaining hypervolume is the last few tenths of a point at each cost level, found by local
search, not predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import moocore
import numpy as np

from hwnas.search.strategies.base import Params, Result, Strategy, Trial, survival_keys
from hwnas.search.strategies.surrogate import Ridge


@dataclass
class ParetoEvolution(Strategy):
    """Elitist steady-state evolution (see the module docstring)."""

    initial: int = 10
    population: int = 20
    crossover: float = 0.3
    screen: int = 64
    explore: float = 0.1
    refit: int = 5  # results between two surrogate fits
    name = "default"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._pending: set[Params] = set()
        self._order: np.ndarray | None = None  # archive indices, best first; None when stale
        self._model = Ridge(self.space.sizes)
        self._fitted = -1
        self._points: list[np.ndarray] = []  # minimized values of each told result (inf: failed)
        self._violations: list[float] = []

    def _fresh(self, params: Params, taken: set[Params]) -> Params:
        """`params` if new, else further mutations of it, else a random new candidate."""
        for _ in range(30):
            if params not in taken:
                return params
            params = self.space.mutate(params, self.rng)
        for _ in range(100):
            params = self.space.sample(self.rng)
            if params not in taken:
                break
        return params

    def _ranked(self) -> np.ndarray:
        if self._order is None:
            self._order = survival_keys(np.array(self._points), np.array(self._violations))
        return self._order

    def _tournament(self, pool: np.ndarray) -> Params:
        a, b = self.rng.integers(len(pool), size=2)
        return self.history[int(pool[min(a, b)])][0].params  # pool is best first

    def _child(self, taken: set[Params]) -> Params:
        pool = self._ranked()[: self.population]
        parent = self._tournament(pool)
        if self.rng.random() < self.crossover:
            other = self._tournament(pool)
            mask = self.rng.random(len(parent)) < 0.5
            parent = tuple(int(x) for x in np.where(mask, parent, other))
        return self._fresh(self.space.mutate(parent, self.rng), taken)

    def ask(self) -> Trial:
        """A random candidate while the archive is small, then an evolved one (the most
        promising of `screen` children under the surrogate); never a repeat."""
        taken = self.seen() | self._pending
        if len(self.history) < self.initial:
            params = self._fresh(self.space.sample(self.rng), taken)
        elif self.screen <= 1 or self.rng.random() < self.explore:
            params = self._child(taken)
        else:
            children = list(dict.fromkeys(self._child(taken) for _ in range(self.screen)))
            params = children[self._most_promising(children)]
        self._pending.add(params)
        return Trial(self._next_number(), params)

    def _most_promising(self, children: list[Params]) -> int:
        """The child whose predicted objectives add the most hypervolume to the feasible
        front (normalized objectives), or else come closest to it; predicted-infeasible
        children only when no other is left."""
        values, violations = np.array(self._points), np.array(self._violations)
        told = np.isfinite(violations)
        if told.sum() < 2:
            return 0
        if self._fitted < 0 or len(self.history) - self._fitted >= self.refit:
            y = np.column_stack([values[told], violations[told]])
            self._model.fit([t.params for (t, _), k in zip(self.history, told, strict=True) if k], y)
            self._fitted = len(self.history)
        pred = self._model.predict(children)
        points, violation = pred[:, :-1], pred[:, -1]
        feasible = values[violations == 0.0]
        if len(feasible) == 0:
            return int(np.argmin(violation))
        front = feasible[moocore.is_nondominated(feasible)]
        lo, hi = feasible.min(axis=0), feasible.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        front_n, points_n = (front - lo) / span, (points - lo) / span
        ref = front_n.max(axis=0) + 0.1
        base = moocore.hypervolume(front_n, ref=ref)
        gain = np.array([moocore.hypervolume(np.vstack([front_n, p]), ref=ref) - base for p in points_n])
        # closeness: the smallest shift that would make the child non-dominated (additive epsilon)
        gap = np.array([np.min(np.max(p - front_n, axis=1)) for p in points_n])
        score = np.where(gain > 0, -gain, gap)  # lower is better; any gain beats every gap
        score = score + np.where(violation > 1e-9 * (1 + np.abs(violation).max()), 1e6, 0.0)
        return int(np.argmin(score))

    def _observe(self, trial: Trial, result: Result) -> None:
        self._pending.discard(trial.params)
        self._order = None
        failed = result.values is None
        self._points.append(np.full(len(self.directions), np.inf) if failed else self.minimized(result))
        self._violations.append(result.violation)
