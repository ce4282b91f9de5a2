"""hwnas's default: steady-state elitist evolution with NSGA-II selection and no repeats.

Why this and not Optuna's NSGA-II with its defaults: a tabular or cost-model objective is
deterministic, so evaluating a candidate twice is a wasted evaluation (NSGA-II's generations
repeat many of them in a small space), and waiting for a full generation of 50 before
selecting slows the start. Here every result joins an archive at once; parents are drawn by
binary tournament from the archive's best `population` under NSGA-II's order (constrained
Pareto rank, then crowding distance, so the whole front is spread over); a child is a
uniform crossover of two parents (probability `crossover`) and a one-dimension mutation,
redrawn until it is a candidate never evaluated nor pending. The benchmark
(tools/bench/search.py) compares it with the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.search.strategies.base import Params, Result, Strategy, Trial, survival_keys


@dataclass
class ParetoEvolution(Strategy):
    """Elitist steady-state evolution (see the module docstring)."""

    initial: int = 20
    population: int = 30
    crossover: float = 0.3
    name = "default"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._pending: set[Params] = set()
        self._order: np.ndarray | None = None  # archive indices, best first; None when stale

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
            m = len(self.directions)
            points = np.array([self.minimized(r) if r.values is not None else np.full(m, np.inf)
                               for _, r in self.history])
            violations = np.array([r.violation for _, r in self.history])
            self._order = survival_keys(points, violations)
        return self._order

    def _tournament(self, pool: np.ndarray) -> Params:
        a, b = self.rng.integers(len(pool), size=2)
        return self.history[int(pool[min(a, b)])][0].params  # pool is best first

    def ask(self) -> Trial:
        """A random candidate while the archive is small, then an evolved one; never a repeat."""
        taken = self.seen() | self._pending
        if len(self.history) < self.initial:
            params = self._fresh(self.space.sample(self.rng), taken)
        else:
            pool = self._ranked()[: self.population]
            parent = self._tournament(pool)
            if self.rng.random() < self.crossover:
                other = self._tournament(pool)
                mask = self.rng.random(len(parent)) < 0.5
                parent = tuple(int(x) for x in np.where(mask, parent, other))
            params = self._fresh(self.space.mutate(parent, self.rng), taken)
        self._pending.add(params)
        return Trial(self._next_number(), params)

    def _observe(self, trial: Trial, result: Result) -> None:
        self._pending.discard(trial.params)
        self._order = None
