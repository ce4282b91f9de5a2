"""Regularized (aging) evolution, Real et al. 2019, with multi-objective selection.

A population of the `population` most recent candidates; each child is a mutation of the
best of `sample` random members, and the oldest member dies (not the worst: aging is the
regularizer). With one objective "best" is the best value; with several, the lowest
constrained Pareto rank within the tournament, ties broken by NSGA-II crowding distance.
Infeasible candidates lose to feasible ones by Deb's rule (see `base.constrained_rank`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hwnas.search.strategies.base import Params, Result, Strategy, Trial, survival_keys


@dataclass
class RegularizedEvolution(Strategy):
    """Aging evolution: random until `population` results, then tournament + mutation."""

    population: int = 50
    sample: int = 10
    members: deque[tuple[Params, Result]] = field(default_factory=deque, init=False)
    name = "evolution"

    def ask(self) -> Trial:
        """A random candidate while the population fills, then a mutated tournament winner."""
        if len(self.members) < self.population:
            return Trial(self._next_number(), self.space.sample(self.rng))
        picks = self.rng.choice(len(self.members), size=min(self.sample, len(self.members)), replace=False)
        group = [self.members[int(i)] for i in picks]
        points = np.array([self.minimized(r) if r.values is not None else np.full(len(self.directions), np.inf)
                           for _, r in group])
        violations = np.array([r.violation for _, r in group])
        parent = group[int(survival_keys(points, violations)[0])][0]
        return Trial(self._next_number(), self.space.mutate(parent, self.rng))

    def _observe(self, trial: Trial, result: Result) -> None:
        self.members.append((trial.params, result))
        if len(self.members) > self.population:
            self.members.popleft()
