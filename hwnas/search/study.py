"""Search studies: a strategy, a space, objectives and constraints, and trials kept in Optuna storage.

A study lives in an Optuna RDB storage (SQLite by default, PostgreSQL to share it between
worker processes on one machine or many). The storage is the only record of what was
evaluated: each evaluated candidate is added as one finished trial (`Study.add_trial`, one
transaction) with its objective values, its constraint values where Optuna's samplers and
optuna-dashboard look for them, its candidate key and every metric measured. Nothing about a
trial is stored before it is finished, so a worker killed at any moment loses at most the
candidate it was evaluating, and no trial is stored twice.

The strategy itself is not stored: a worker (started fresh, or again after a crash) rebuilds
it from the study's description and tells it every stored trial, in trial order; before each
`ask` it tells it the trials other workers stored meanwhile. Its random stream is seeded from
the study's seed, the worker's index and the number of trials already stored, so a resumed
worker does not replay the proposals it made before.

The budget counts stored trials. A worker stops asking when the study holds `budget` of them
and drops a result that arrives after another worker filled the budget; with several workers
a race between that check and the store can still add at most one trial per other worker.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from hwnas.errors import HwnasError, first_line
from hwnas.search import anb, robustness
from hwnas.search.objectives import Constraint, ObjectiveError, parse_constraint
from hwnas.search.spaces import Space, make_space
from hwnas.search.strategies import STRATEGIES, CategoricalSpace, Result, Strategy, Trial, make

ALIASES = {"accuracy": "baseline_accuracy", "drift_1d": "baseline_drift_86400",
           "analog_drift_1d": "analog_drift_86400"}
"""Short names of AnalogNAS-Bench metrics (`anb.METRICS` are accepted as they are)."""
HARDWARE = {"latency": "latency_s", "energy": "energy_j", "peak_memory": "peak_memory_bytes",
            "weights": "weight_bytes", "params": "params"}
"""Hardware metrics of a candidate on the study's target (minimized): the cost report's field
each reads. The target's resources (sram, flash, tiles, dsp, ...) are metrics too, by name, as
the amount used."""
FITS = "fits"
_ATTR = "hwnas"  # user attribute marking a trial a hwnas study stored (its candidate key, uid, metrics)


class StudyError(HwnasError):
    """A study that cannot be opened, resumed or searched as asked."""


UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "J": 1.0, "mJ": 1e-3, "uJ": 1e-6, "nJ": 1e-9, "pJ": 1e-12,
         "B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024.0, "MiB": 1024.0**2, "GiB": 1024.0**3, "%": 1.0}
"""Units a constraint's bound may carry (latency in s, energy in J, memory in bytes, accuracy in %)."""
_BOUND = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)\s*$")


def parse_bound(text: str) -> str:
    """A constraint as the user writes it ("latency<=5ms", "SRAM<=320KiB") in base units
    ("latency<=0.005"); ObjectiveError names what is wrong."""
    m = _BOUND.match(text)
    if m is None:
        raise ObjectiveError(f"malformed constraint '{text}' (write METRIC<=NUMBER[UNIT] or METRIC>=NUMBER[UNIT], "
                             f"e.g. latency<=5ms)")
    metric, sense, number, unit = m.groups()
    if unit and unit not in UNITS:
        raise ObjectiveError(f"constraint '{text}': unknown unit '{unit}' (known: {', '.join(UNITS)})")
    try:
        value = float(number) * UNITS.get(unit, 1.0)
    except ValueError:
        raise ObjectiveError(f"constraint '{text}': '{number}' is not a number") from None
    return f"{metric}{sense}{value:.12g}"


@dataclass(frozen=True)
class SearchSpec:
    """What a study searches; stored with the study, so `show` and every worker read it back."""

    space: str
    target: str
    objectives: tuple[str, ...]
    constraints: tuple[str, ...] = ()
    strategy: str = "default"
    seed: int = 0

    def to_json(self) -> str:
        """The spec as JSON text."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSpec:
        """The spec `to_json` wrote."""
        d = json.loads(text)
        return cls(d["space"], d["target"], tuple(d["objectives"]), tuple(d["constraints"]), d["strategy"], d["seed"])


@dataclass
class Evaluated:
    """One stored trial: its number, candidate key, objective values (None: failed), constraint
    values (<= 0 met) and every metric measured."""

    number: int
    key: str
    values: tuple[float, ...] | None
    constraints: tuple[float, ...]
    metrics: dict[str, float]
    params: tuple[int, ...]
    uid: str = ""

    @property
    def feasible(self) -> bool:
        """Evaluated and within every constraint."""
        return self.values is not None and all(c <= 0 for c in self.constraints)

    @property
    def violation(self) -> float:
        """Total constraint violation (infinite when it failed)."""
        return math.inf if self.values is None else float(sum(max(0.0, c) for c in self.constraints))


class Problem:
    """Evaluates candidates of a space: AnalogNAS-Bench accuracies (NAS-Bench-201 cells only)
    and hardware metrics on one target, objectives and constraints among them. A candidate that
    does not fit the target violates an implicit constraint (`fits`) by 1."""

    def __init__(self, spec: SearchSpec, space: Space | None = None,
                 hardware: Callable[[Any], dict[str, float]] | None = None, bench: str | None = None) -> None:
        self.spec = spec
        self.space = space if space is not None else make_space(spec.space, spec.target)
        self.objectives = tuple(ALIASES.get(o, o) for o in spec.objectives)
        self.constraints: tuple[Constraint, ...] = tuple(
            Constraint(ALIASES.get(c.metric, c.metric), c.sense, c.bound)
            for c in (parse_constraint(t) for t in spec.constraints))
        if not self.objectives:
            raise ObjectiveError("a search needs at least one objective")
        if len(set(self.objectives)) != len(self.objectives):
            raise ObjectiveError(f"objective listed twice in {','.join(spec.objectives)}")
        wanted = [*self.objectives, *(c.metric for c in self.constraints)]
        table = [m for m in wanted if m in anb.METRICS]
        if table and self.space.name != "nb201":
            raise ObjectiveError(f"{', '.join(table)}: AnalogNAS-Bench has accuracies of float NAS-Bench-201 cells "
                                 f"only, not of space '{self.space.name}' (use hardware objectives there)")
        self.bench = anb.load(bench) if table else None
        self.needs_hardware = any(m not in anb.METRICS for m in wanted)
        self._hardware_fn: Callable[[Any], dict[str, float]] | None = hardware
        self._noise = robustness.noise_metric(self.space, spec.target) if robustness.METRIC in wanted else None
        unknown = [m for m in wanted if m not in anb.METRICS and m not in HARDWARE and m != robustness.METRIC]
        if unknown:  # a resource of the target's cost model? price one candidate to learn their names
            probe = self._hardware()(self.space.decode([0.0] * len(self.space.dims)))
            resources = [m for m in probe if m not in HARDWARE and m != FITS]
            for m in unknown:
                if m not in resources:
                    known = [*anb.METRICS, *ALIASES, *HARDWARE, robustness.METRIC, *resources]
                    raise ObjectiveError(f"unknown objective or metric '{m}' (known: {', '.join(known)})")

    def _hardware(self) -> Callable[[Any], dict[str, float]]:
        """The hardware metrics function, made on first use (pricing warms up per target)."""
        if self._hardware_fn is None:
            self._hardware_fn = hardware_metrics(self.space, self.spec.target)
        return self._hardware_fn

    @property
    def directions(self) -> tuple[str, ...]:
        """Accuracies are maximized, hardware metrics minimized."""
        return tuple("maximize" if o in anb.METRICS else "minimize" for o in self.objectives)

    @property
    def categorical(self) -> CategoricalSpace:
        """The space as strategies see it (one categorical choice per dimension)."""
        return CategoricalSpace.of(self.space)

    def metrics(self, candidate: Any) -> dict[str, float]:
        """Every metric the objectives and constraints need (hardware ones all at once)."""
        out: dict[str, float] = {}
        if self.bench is not None:
            for m in [*self.objectives, *(c.metric for c in self.constraints)]:
                if m in anb.METRICS:
                    out[m] = self.bench.query(candidate, m)
        if self.needs_hardware:
            out.update(self._hardware()(candidate))
        if self._noise is not None:
            out[robustness.METRIC] = self._noise(candidate)
        return out

    def evaluate(self, params: Sequence[int]) -> tuple[str, Result, dict[str, float]]:
        """A choice vector's candidate key, result and metrics."""
        candidate = self.space.decode([float(p) for p in params])
        metrics = self.metrics(candidate)
        values = tuple(float(metrics[o]) for o in self.objectives)
        limits = [c.value(float(metrics[c.metric])) for c in self.constraints]
        if self.needs_hardware:
            limits.append(0.0 if metrics.get(FITS, 1.0) else 1.0)
        return self.space.key(candidate), Result(values, tuple(limits)), metrics

    def constraint_names(self) -> list[str]:
        """The constraints as written, the implicit `fits` last when hardware is priced."""
        return [str(c) for c in self.constraints] + ([FITS] if self.needs_hardware else [])


def hardware_metrics(space: Space, target: str) -> Callable[[Any], dict[str, float]]:
    """A function giving a candidate's hardware metrics on `target` (latency, energy, peak
    memory, weights, params, each resource used, and `fits`), memoized per candidate key.
    NAS-Bench-201 cells are priced by the fast costing (`search.cost.NB201Cost`, equal to
    `estimate()` on the built network); other spaces build the network and call `estimate()`."""
    from hwnas.backends.cost import estimate
    from hwnas.backends.target import load_target
    from hwnas.search.cost import NB201Cost
    from hwnas.search.spaces.nb201 import NB201Space

    t = load_target(target)
    cache: dict[str, dict[str, float]] = {}
    fast = NB201Cost(t, space) if type(space) is NB201Space else None
    params_by_convs: dict[tuple[int, int], int] = {}  # an NB201 net's params depend on its conv counts only

    def metrics(candidate: Any) -> dict[str, float]:
        key = space.key(candidate)
        if key in cache:
            return cache[key]
        report: Any
        if fast is not None:
            report = fast.price(candidate)
            convs = (candidate.ops.count("nor_conv_3x3"), candidate.ops.count("nor_conv_1x1"))
            if convs not in params_by_convs:
                params_by_convs[convs] = _params(space.build_ir(candidate))
            params = params_by_convs[convs]
        else:
            graph = space.build_ir(candidate)
            report = estimate(graph, t)
            params = _params(graph)
        out = {name: float(getattr(report, attr)) for name, attr in HARDWARE.items() if attr != "params"}
        out["params"] = float(params)
        out.update({name: float(r.used) for name, r in report.resources.items()})
        out[FITS] = 1.0 if report.fits else 0.0
        cache[key] = out
        return out

    return metrics


def _params(graph: Any) -> int:
    """Weights in a graph, each counted once."""
    from hwnas.ir.registry import graph_weights

    return graph_weights(graph).params


# -- storage -----------------------------------------------------------------------------------

def default_storage(out_dir: str) -> str:
    """The SQLite file a study keeps beside its results."""
    return f"sqlite:///{os.path.abspath(os.path.join(out_dir, 'study.db'))}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage at `url`; StudyError with one line when it cannot be reached."""
    import sqlalchemy.exc

    if "://" not in url:
        raise StudyError(f"storage '{url}' is not a URL (sqlite:///PATH or postgresql://USER@HOST:PORT/DB)")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                                          skip_compatibility_check=False)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as e:
        raise StudyError(f"cannot open storage {_redacted(url)}: {first_line(e)}") from None


def _redacted(url: str) -> str:
    """The URL without a password."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        tail = f"{user}:***@{tail.split('@', 1)[1]}"
    return head + sep + tail


@dataclass
class Study:
    """An opened study: its Optuna study, its spec, and the problem it evaluates."""

    optuna_study: optuna.Study
    spec: SearchSpec
    problem: Problem
    worker: int = 0
    _told: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        """The study's name in its storage."""
        return self.optuna_study.study_name

    def stored(self) -> list[Evaluated]:
        """Every trial a hwnas worker stored, in trial order."""
        out = []
        for t in self.optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                      optuna.trial.TrialState.FAIL)):
            attrs = t.user_attrs.get(_ATTR)
            if not isinstance(attrs, dict):
                continue
            names = [d.name for d in self.problem.space.dims]
            out.append(Evaluated(t.number, attrs["key"], tuple(t.values) if t.values is not None else None,
                                 tuple(attrs.get("constraints", ())), dict(attrs.get("metrics", {})),
                                 tuple(int(t.params[n]) for n in names), attrs.get("uid", "")))
        return sorted(out, key=lambda e: e.number)

    def store(self, params: Sequence[int], key: str, result: Result, metrics: dict[str, float]) -> str:
        """Add one finished trial (one transaction); returns its uid."""
        names = [d.name for d in self.problem.space.dims]
        uid = uuid.uuid4().hex
        distributions: dict[str, optuna.distributions.BaseDistribution] = {
            n: optuna.distributions.CategoricalDistribution(list(range(len(d))))
            for n, d in zip(names, self.problem.space.dims, strict=True)}
        ok = result.values is not None
        self.optuna_study.add_trial(optuna.trial.create_trial(
            params={n: int(p) for n, p in zip(names, params, strict=True)}, distributions=distributions,
            values=list(result.values) if result.values is not None else None,
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
            user_attrs={_ATTR: {"key": key, "uid": uid, "worker": self.worker, "constraints": list(result.constraints),
                                "metrics": {k: float(v) for k, v in metrics.items()}}},
            # where Optuna's samplers and optuna-dashboard read constraints (Trial.set_constraint)
            system_attrs={f"constraints:{k}": c for k, c in enumerate(result.constraints)} if ok else None))
        return uid

    def strategy(self, resumed: int) -> Strategy:
        """The study's strategy, seeded for this worker and this many stored trials."""
        seed = self.spec.seed + 7919 * self.worker + 104_729 * resumed
        return make(self.spec.strategy, self.problem.categorical, self.problem.directions, seed)

    def sync(self, strategy: Strategy) -> int:
        """Tell `strategy` the stored trials it was not told yet; returns how many are stored."""
        stored = self.stored()
        for e in stored:
            if e.uid not in self._told:
                self._told.add(e.uid)
                strategy.tell(Trial(e.number, e.params), Result(e.values, e.constraints))
        return len(stored)

    def run(self, budget: int, progress: Callable[[int, int], None] | None = None) -> int:
        """Evaluate until the study holds `budget` trials; returns how many this worker stored."""
        already = len(self.stored())
        strategy = self.strategy(already)
        added = 0
        done = self.sync(strategy)
        while done < budget:
            if progress is not None:
                progress(done, budget)
            trial = strategy.ask()
            key, result, metrics = self.problem.evaluate(trial.params)
            if len(self.stored()) >= budget:  # another worker filled the budget meanwhile
                break
            uid = self.store(trial.params, key, result, metrics)
            self._told.add(uid)
            strategy.tell(trial, result)
            added += 1
            done = self.sync(strategy)
        if progress is not None:
            progress(done, budget)
        return added


def open_study(storage: str, name: str, spec: SearchSpec | None = None, worker: int = 0,
               hardware: Callable[[Any], dict[str, float]] | None = None, bench: str | None = None) -> Study:
    """Open study `name` in `storage`, creating it from `spec` when it does not exist. An
    existing study must have been made from the same spec (its budget may differ). `bench` is
    another AnalogNAS-Bench file than the package's."""
    if spec is not None and spec.strategy not in STRATEGIES:
        raise StudyError(f"unknown strategy '{spec.strategy}' (known: {', '.join(STRATEGIES)})")
    st = open_storage(storage)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(st, include_best_trial=False)]
    if name in names:
        study = optuna.load_study(study_name=name, storage=st)
        stored = study.user_attrs.get("hwnas_spec")
        if stored is None:
            raise StudyError(f"study '{name}' in {_redacted(storage)} was not made by hwnas search")
        have = SearchSpec.from_json(stored)
        if spec is not None and have != spec:
            raise StudyError(f"study '{name}' exists with another search ({_describe(have)}); "
                             f"choose another --study name or the same options")
        spec = have
    else:
        if spec is None:
            known = ", ".join(names) or "none"
            raise StudyError(f"no study '{name}' in {_redacted(storage)} (studies there: {known})")
        problem = Problem(spec, hardware=hardware, bench=bench)  # check objectives before anything is created
        with _quiet_optuna():
            directions = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize"
                          else optuna.study.StudyDirection.MINIMIZE for d in problem.directions]
            study = optuna.create_study(storage=st, study_name=name, directions=directions,
                                        load_if_exists=True)
        study.set_user_attr("hwnas_spec", spec.to_json())
        return Study(study, spec, problem, worker)
    return Study(study, spec, Problem(spec, hardware=hardware, bench=bench), worker)


def _describe(spec: SearchSpec) -> str:
    cons = f" {' '.join(spec.constraints)}" if spec.constraints else ""
    return (f"space {spec.space}, target {spec.target}, objectives {','.join(spec.objectives)}{cons}, "
            f"strategy {spec.strategy}, seed {spec.seed}")


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
