"""Objectives and hard constraints of NAS-Bench-201 searches, evaluated from tables.

`NB201Problem` turns a strategy's choice vector into an arch string, reads accuracies from
AnalogNAS-Bench (any of `anb.METRICS`, maximized) and hardware metrics from functions of the
arch string (e.g. latency or energy from the fast costing, minimized), and checks hard
constraints written "metric<=bound" or "metric>=bound". A candidate a cost function
reports as not fitting (it raises `CandidateError`) is a failed trial, which every strategy
treats as infeasible.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hwnas.errors import HwnasError
from hwnas.search import anb
from hwnas.search.spaces import nasbench201 as nb201
from hwnas.search.spaces.nb201 import NB201Space
from hwnas.search.strategies.base import CategoricalSpace, Params, Result

NB201_SPACE = CategoricalSpace.of(NB201Space())
"""NAS-Bench-201 as six categorical choices of `nasbench201.OPS`, in the arch string's edge order."""


class ObjectiveError(HwnasError):
    """An unknown objective or a malformed constraint."""


class CandidateError(HwnasError):
    """A candidate cannot be evaluated (it does not fit the target, or does not build)."""


def nb201_arch(params: Params) -> str:
    """The arch string of a choice vector of `NB201_SPACE`."""
    return nb201.format_arch(nb201.Cell(tuple(nb201.OPS[i] for i in params)))


def nb201_params(arch: str) -> Params:
    """The choice vector of an arch string."""
    return tuple(nb201.OPS.index(op) for op in nb201.parse_arch(arch).ops)


@dataclass(frozen=True)
class Constraint:
    """A hard constraint `metric <= bound` or `metric >= bound`."""

    metric: str
    sense: str
    bound: float

    def value(self, x: float) -> float:
        """Optuna's convention: <= 0 when satisfied, the excess otherwise."""
        return x - self.bound if self.sense == "<=" else self.bound - x

    def __str__(self) -> str:
        return f"{self.metric}{self.sense}{self.bound:g}"


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def parse_constraint(text: str) -> Constraint:
    """"latency<=0.005" -> Constraint; ObjectiveError for anything else."""
    m = _CONSTRAINT.match(text)
    if m is None:
        raise ObjectiveError(f"malformed constraint '{text}' (write metric<=number or metric>=number)")
    try:
        bound = float(m.group(3))
    except ValueError:
        raise ObjectiveError(f"malformed constraint '{text}': '{m.group(3)}' is not a number") from None
    return Constraint(m.group(1), m.group(2), bound)


@dataclass
class NB201Problem:
    """NAS-Bench-201 × AnalogNAS-Bench (plus hardware metrics from `costs`): evaluates a
    choice vector of `NB201_SPACE` to a `Result`."""

    objectives: Sequence[str]
    constraints: Sequence[Constraint] = ()
    costs: Mapping[str, Callable[[str], float]] = field(default_factory=dict)
    bench: anb.AnalogNASBench | None = None

    def __post_init__(self) -> None:
        self.bench = self.bench or anb.load()
        for name in [*self.objectives, *(c.metric for c in self.constraints)]:
            if name not in anb.METRICS and name not in self.costs:
                known = ", ".join([*anb.METRICS, *self.costs])
                raise ObjectiveError(f"unknown objective or metric '{name}' (known: {known})")
        if not self.objectives:
            raise ObjectiveError("a search needs at least one objective")

    @property
    def space(self) -> CategoricalSpace:
        """The space strategies search."""
        return NB201_SPACE

    @property
    def directions(self) -> tuple[str, ...]:
        """Accuracies are maximized, hardware metrics minimized."""
        return tuple("maximize" if o in anb.METRICS else "minimize" for o in self.objectives)

    def metric(self, arch: str, name: str) -> float:
        """One metric of one arch."""
        if name in anb.METRICS:
            assert self.bench is not None
            return self.bench.query(arch, name)
        return float(self.costs[name](arch))

    def evaluate(self, params: Params) -> Result:
        """Objective values and constraint values of a candidate (values None when it fails)."""
        arch = nb201_arch(params)
        try:
            values = tuple(self.metric(arch, o) for o in self.objectives)
            limits = tuple(c.value(self.metric(arch, c.metric)) for c in self.constraints)
        except CandidateError:
            return Result(None, tuple(float("inf") for _ in self.constraints))
        return Result(values, limits)
