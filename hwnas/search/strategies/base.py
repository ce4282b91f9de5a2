"""What every strategy shares: the categorical view of a space, trials, results, the ask/tell
interface, and constrained Pareto ranking.

A strategy sees a candidate as a vector of choice indices, one per dimension of the space
(`CategoricalSpace.sizes`; `CategoricalSpace.of(space)` views any space of the spaces'
contract so); the space decodes it to an architecture. Objectives come with
directions; internally everything is minimized. A result carries the objective values (None
when the candidate failed to build or price) and constraint values in Optuna's convention
(<= 0 is satisfied, the amount above 0 is the violation), so the same hard constraints
(latency <= T, peak SRAM, flash, tiles, does-not-fit) reach every strategy the same way:
Optuna's samplers through `constraints_func`, the others through `constrained_rank`
(Deb's rule: feasible before infeasible, infeasible by total violation).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import moocore
import numpy as np

from hwnas.errors import HwnasError
from hwnas.search.spaces import Space

Params = tuple[int, ...]
DIRECTIONS = ("minimize", "maximize")


class StrategyError(HwnasError):
    """An unknown strategy, a wrong option, or a space or objective it cannot handle."""


@dataclass(frozen=True)
class CategoricalSpace:
    """A space as strategies see it: `sizes[d]` choices on dimension d, `names` for Optuna's
    parameters, and optional space-specific `sample`/`mutate` (uniform draws and a one-dimension
    change otherwise, as in Real et al.'s NAS-Bench mutations)."""

    sizes: tuple[int, ...]
    names: tuple[str, ...] = ()
    sampler: Callable[[np.random.Generator], Params] | None = None
    mutator: Callable[[Params, np.random.Generator], Params] | None = None
    reader: Callable[[Params], Params] | None = None  # a vector read back through its space

    @classmethod
    def of(cls, space: Space[Any]) -> CategoricalSpace:
        """The categorical view of a space of the spaces' contract (`hwnas.search.spaces.Space`):
        its dims, and its sampling and mutation read back as choice indices. Every vector is
        read back through the space (decode, then encode), memoized, so that vectors naming the
        same candidate count as one. Where the space keeps the base class's sampling and
        mutation, they are drawn on the indices directly (the same draws, with no candidate
        built for each); a space's own `sample`/`mutate` are called on its candidates."""
        sizes = tuple(len(d) for d in space.dims)

        @functools.lru_cache(maxsize=1 << 16)
        def canonical(params: Params) -> Params:
            return tuple(int(i) for i in space.encode(space.decode([float(i) for i in params])))

        if type(space).sample is Space.sample and type(space).mutate is Space.mutate:
            return cls(sizes=sizes, names=tuple(d.name for d in space.dims),
                       sampler=lambda rng: canonical(_uniform(sizes, rng)),
                       mutator=lambda p, rng: canonical(_one_change(sizes, p, rng)), reader=canonical)

        def encode(candidate: Any) -> Params:
            return tuple(int(i) for i in space.encode(candidate))

        return cls(sizes=sizes, names=tuple(d.name for d in space.dims),
                   sampler=lambda rng: encode(space.sample(rng)),
                   mutator=lambda p, rng: encode(space.mutate(space.decode([float(i) for i in p]), rng)))

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1:
            raise StrategyError(f"a space needs at least one dimension with a choice, not {self.sizes}")
        if not self.names:
            object.__setattr__(self, "names", tuple(f"x{d}" for d in range(len(self.sizes))))

    @property
    def cardinality(self) -> int:
        """How many distinct candidates the space holds."""
        return int(np.prod(self.sizes, dtype=object))

    def sample(self, rng: np.random.Generator) -> Params:
        """A random candidate."""
        return self.sampler(rng) if self.sampler is not None else _uniform(self.sizes, rng)

    def mutate(self, params: Params, rng: np.random.Generator) -> Params:
        """A neighbour: one dimension (with more than one choice) set to another choice."""
        return self.mutator(params, rng) if self.mutator is not None else _one_change(self.sizes, params, rng)

    def neighbours(self, params: Params, rng: np.random.Generator) -> list[Params]:
        """The distinct candidates one change away: every one-dimension change, read back
        through the space where it has a reader; for a space with its mutation of its own
        (and no reader), as many of its mutations as there are one-dimension changes."""
        if self.mutator is not None and self.reader is None:
            draws = [self.mutate(params, rng) for _ in range(sum(n - 1 for n in self.sizes))]
        else:
            read = self.reader or (lambda p: p)
            draws = [read((*params[:d], c, *params[d + 1:]))
                     for d, n in enumerate(self.sizes) for c in range(n) if c != params[d]]
        return [q for q in dict.fromkeys(draws) if q != params]


def _uniform(sizes: tuple[int, ...], rng: np.random.Generator) -> Params:
    """One choice per dimension, uniformly (the draws of `Space.sample`)."""
    return tuple(int(rng.integers(n)) for n in sizes)


def _one_change(sizes: tuple[int, ...], params: Params, rng: np.random.Generator) -> Params:
    """`params` with one dimension of several choices set to another (the draws of `Space.mutate`)."""
    free = [d for d, n in enumerate(sizes) if n > 1]
    if not free:
        return params
    d = free[int(rng.integers(len(free)))]
    new = list(params)
    new[d] = (params[d] + 1 + int(rng.integers(sizes[d] - 1))) % sizes[d]
    return tuple(new)


@dataclass
class Trial:
    """One candidate a strategy proposed (or one it is told about): its number, choice indices,
    and what the strategy keeps with it (Optuna's trial for the Optuna strategies)."""

    number: int
    params: Params
    handle: object = None


@dataclass(frozen=True)
class Result:
    """What evaluating a trial gave: objective values (None: it failed) and constraint values
    (<= 0 satisfied)."""

    values: tuple[float, ...] | None
    constraints: tuple[float, ...] = ()

    @property
    def violation(self) -> float:
        """Total constraint violation; infinite for a failed candidate."""
        if self.values is None:
            return float("inf")
        return float(sum(max(0.0, c) for c in self.constraints))

    @property
    def feasible(self) -> bool:
        """Evaluated and within every constraint."""
        return self.violation == 0.0


@dataclass
class Strategy(ABC):
    """The ask/tell interface: `ask()` proposes a trial, `tell(trial, result)` reports it.
    `tell` also accepts trials this instance never asked (a resumed study replays its history),
    and a strategy may be asked several times before it is told (parallel workers)."""

    space: CategoricalSpace
    directions: tuple[str, ...]
    seed: int = 0
    history: list[tuple[Trial, Result]] = field(default_factory=list, init=False)
    name = "strategy"

    def __post_init__(self) -> None:
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if not self.directions or bad:
            raise StrategyError(f"directions must be 'minimize' or 'maximize', not {list(self.directions)}")
        self.rng = np.random.default_rng(self.seed)
        self._sign = np.array([1.0 if d == "minimize" else -1.0 for d in self.directions])
        self._asked = 0

    def _next_number(self) -> int:
        self._asked = max(self._asked, len(self.history)) + 1
        return self._asked - 1

    @abstractmethod
    def ask(self) -> Trial:
        """Propose the next candidate."""

    def tell(self, trial: Trial, result: Result) -> None:
        """Report a candidate's result."""
        if result.values is not None and len(result.values) != len(self.directions):
            raise StrategyError(f"{len(result.values)} objective values for {len(self.directions)} directions")
        self.history.append((trial, result))
        self._observe(trial, result)

    def _observe(self, trial: Trial, result: Result) -> None:  # noqa: B027 - an optional hook
        """A hook for strategies that learn from each result."""

    def minimized(self, result: Result) -> np.ndarray:
        """The result's values turned to minimization."""
        assert result.values is not None
        return np.asarray(result.values, dtype=float) * self._sign

    def seen(self) -> set[Params]:
        """Every candidate told so far."""
        return {t.params for t, _ in self.history}


def constrained_rank(points: np.ndarray, violations: np.ndarray) -> np.ndarray:
    """Pareto ranks (0 = non-dominated) under Deb's constrained domination: every feasible
    point ranks before every infeasible one, infeasible ones rank by total violation."""
    n = len(points)
    rank = np.zeros(n, dtype=int)
    feasible = violations == 0.0
    if feasible.any():
        rank[feasible] = moocore.pareto_rank(points[feasible]) if points.shape[1] > 1 \
            else _scalar_rank(points[feasible, 0])
    top = int(rank[feasible].max()) + 1 if feasible.any() else 0
    if (~feasible).any():
        rank[~feasible] = top + _scalar_rank(violations[~feasible])
    return rank


def _scalar_rank(x: np.ndarray) -> np.ndarray:
    """Dense ranks of a 1-D array (equal values share a rank)."""
    _, inverse = np.unique(x, return_inverse=True)
    return np.asarray(inverse, dtype=int)


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front (boundary points infinite)."""
    n, m = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(points[:, k], kind="stable")
        span = points[order[-1], k] - points[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (points[order[2:], k] - points[order[:-2], k]) / span
    return dist


def survival_keys(points: np.ndarray, violations: np.ndarray) -> np.ndarray:
    """NSGA-II's order of merit: sort by the returned keys ascending (rank first, then larger
    crowding distance). `points` are minimized values (rows of failed ones may be anything)."""
    rank = constrained_rank(points, violations)
    crowd = np.zeros(len(points))
    for r in np.unique(rank):
        members = np.flatnonzero(rank == r)
        if np.isfinite(violations[members]).all() and violations[members[0]] == 0:
            crowd[members] = crowding(points[members])
    return np.lexsort((-crowd, rank))


def pareto_front(strategy: Strategy) -> list[tuple[Trial, Result]]:
    """The feasible non-dominated results told so far (one per candidate), in telling order."""
    best: dict[Params, tuple[Trial, Result]] = {}
    for trial, result in strategy.history:
        if result.feasible:
            best.setdefault(trial.params, (trial, result))
    told = list(best.values())
    if not told:
        return []
    points = np.array([strategy.minimized(r) for _, r in told])
    keep = moocore.is_nondominated(points, keep_weakly=True)
    return [tr for tr, k in zip(told, keep, strict=True) if k]
