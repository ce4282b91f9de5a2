"""Optuna's samplers (TPE, NSGA-II, NSGA-III, GP) through Optuna's own ask/tell.

Each dimension of the space is a categorical parameter; a study in any Optuna storage (in
memory by default, SQLite or PostgreSQL through `storage`) holds the trials, so a study that
is loaded again resumes where it stopped. Hard constraints reach the samplers as Optuna 5
wants them: `tell` sets each constraint value on the trial (`Trial.set_constraint`, which
replaces the deprecated `constraints_func`) before completing it, and every sampler reads
them back from the storage (feasible when all are <= 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna

from hwnas.search.strategies.base import Result, Strategy, StrategyError, Trial

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp")


def make_sampler(kind: str, seed: int, population: int | None = None) -> optuna.samplers.BaseSampler:
    """Optuna's sampler `kind` with its default settings, seeded."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    size = population or 50  # Optuna's default
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=size)
    if kind == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=size)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise StrategyError(f"unknown Optuna sampler '{kind}' (known: {', '.join(SAMPLERS)})")


@dataclass
class OptunaStrategy(Strategy):
    """One Optuna study driven by ask/tell; `sampler` names the sampler (`SAMPLERS`)."""

    sampler: str = "tpe"
    storage: str | optuna.storages.BaseStorage | None = None
    study_name: str | None = None
    population: int | None = None  # NSGA-II/III's; None keeps Optuna's default (50)
    study: optuna.Study = field(init=False)
    name = "optuna"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = f"optuna-{self.sampler}"
        directions = [optuna.study.StudyDirection.MINIMIZE if d == "minimize" else optuna.study.StudyDirection.MAXIMIZE
                      for d in self.directions]
        self.study = optuna.create_study(storage=self.storage, study_name=self.study_name, load_if_exists=True,
                                         sampler=make_sampler(self.sampler, self.seed, self.population),
                                         directions=directions)
        self._distributions: dict[str, optuna.distributions.BaseDistribution] = {
            name: optuna.distributions.CategoricalDistribution(list(range(n)))
            for name, n in zip(self.space.names, self.space.sizes, strict=True)}

    def ask(self) -> Trial:
        """Optuna's next trial, its categorical choices read back as indices."""
        trial = self.study.ask(self._distributions)
        params = tuple(int(trial.params[name]) for name in self.space.names)
        return Trial(trial.number, params, trial)

    def tell(self, trial: Trial, result: Result) -> None:
        """Complete the Optuna trial (constraints first, so the sampler sees them); a trial
        this strategy did not ask is added to the study as a finished one."""
        super().tell(trial, result)
        if isinstance(trial.handle, optuna.Trial):
            if result.values is None:
                self.study.tell(trial.handle, state=optuna.trial.TrialState.FAIL)
            else:
                for k, c in enumerate(result.constraints):
                    trial.handle.set_constraint(str(k), c)
                self.study.tell(trial.handle, list(result.values))
            return
        self.study.add_trial(optuna.trial.create_trial(
            params={n: trial.params[d] for d, n in enumerate(self.space.names)},
            distributions=self._distributions,
            values=list(result.values) if result.values is not None else None,
            state=optuna.trial.TrialState.COMPLETE if result.values is not None else optuna.trial.TrialState.FAIL,
            # where Trial.set_constraint stores them
            system_attrs={f"constraints:{k}": c for k, c in enumerate(result.constraints)}
            if result.values is not None else None))
