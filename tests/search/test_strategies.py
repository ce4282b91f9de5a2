"""Every strategy on NAS-Bench-201 × the AnalogNAS-Bench table with tiny budgets: reproducible
with a seed, hard constraints respected, real Optuna storage (in memory and SQLite)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from hwnas.errors import HwnasError
from hwnas.search import strategies as S
from hwnas.search.objectives import (
    NB201_SPACE,
    Constraint,
    NB201Problem,
    ObjectiveError,
    nb201_arch,
    nb201_params,
    parse_constraint,
)
from hwnas.search.spaces import nasbench201 as nb201

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Small populations, so that the tiny budgets get past each strategy's random start.
OPTIONS: dict[str, dict[str, object]] = {
    "default": {}, "evolution": {"population": 10, "sample": 3}, "reinforce": {"warmup": 10},
    "nsga2": {"population": 10}, "nsga3": {"population": 10}, "tpe": {}, "random": {}, "gp": {}}


def convs(arch: str) -> float:
    """A hardware-like cost every cell has: how many of its edges are convolutions."""
    return float(sum(op.startswith("nor_conv") for op in nb201.parse_arch(arch).ops))


@pytest.fixture(scope="module")
def problem() -> NB201Problem:
    return NB201Problem(["baseline_accuracy", "convs"], [Constraint("convs", "<=", 2)], costs={"convs": convs})


def run(name: str, problem: NB201Problem, budget: int, seed: int, **extra: object) -> S.Strategy:
    strategy = S.make(name, problem.space, problem.directions, seed, **{**OPTIONS[name], **extra})
    for _ in range(budget):
        trial = strategy.ask()
        strategy.tell(trial, problem.evaluate(trial.params))
    return strategy


@pytest.mark.parametrize("name", [s for s in S.STRATEGIES if s != "gp"])
def test_strategy_reproducible_and_constrained(name: str, problem: NB201Problem) -> None:
    a = run(name, problem, 60, seed=3)
    b = run(name, problem, 60, seed=3)
    c = run(name, problem, 60, seed=4)
    asked = [t.params for t, _ in a.history]
    assert asked == [t.params for t, _ in b.history]
    assert asked != [t.params for t, _ in c.history]
    assert all(len(p) == 6 and all(0 <= i < 5 for i in p) for p in asked)
    front = S.pareto_front(a)
    assert front and all(convs(nb201_arch(t.params)) <= 2 for t, _ in front)
    # the front is the table's: no feasible told result dominates a front member
    told = [r.values for _, r in a.history if r.feasible]
    for _, r in front:
        assert r.values is not None
        assert not any(v[0] >= r.values[0] and v[1] <= r.values[1] and v != r.values for v in told)
    feasible_late = np.mean([r.feasible for _, r in a.history[30:]])
    if name in ("default", "reinforce", "tpe"):  # these learn the constraint within 60 trials
        assert feasible_late >= 0.7, feasible_late


def test_every_strategy_prefers_feasible(problem: NB201Problem) -> None:
    # A tight constraint (only 1 conv edge, 11% of cells): the strategies that select do so
    # among feasible candidates, so their late proposals are feasible far above chance.
    tight = NB201Problem(["baseline_accuracy", "convs"], [Constraint("convs", "<=", 1)], costs={"convs": convs},
                         bench=problem.bench)
    chance = np.mean([convs(nb201.arch_from_index(i)) <= 1 for i in range(nb201.NUM_ARCHS)])
    for name in ("default", "evolution", "reinforce", "tpe", "nsga2"):
        s = run(name, tight, 120, seed=0)
        late = np.mean([r.feasible for _, r in s.history[60:]])
        assert late > 2 * chance, (name, late, chance)


@pytest.mark.slow
def test_gp_sampler_runs_constrained(problem: NB201Problem) -> None:
    # 10 random start-up trials, then the GP (about 4 s a step on 2 cores)
    s = run("gp", problem, 11, seed=0)
    assert isinstance(s, S.OptunaStrategy)
    trials = s.study.get_trials()
    assert len(trials) == 11 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.constraints == {"0": convs(nb201_arch(nb201_params_of(t))) - 2} for t in trials)
    assert [nb201_params_of(t) for t in trials] == [t.params for t, _ in run("gp", problem, 11, 0).history]


def nb201_params_of(trial: optuna.trial.FrozenTrial) -> tuple[int, ...]:
    return tuple(int(trial.params[n]) for n in NB201_SPACE.names)


def test_optuna_sqlite_resumes_and_keeps_constraints(problem: NB201Problem, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = run("nsga2", problem, 10, seed=1, storage=url, study_name="s")
    study = optuna.load_study(study_name="s", storage=url)
    stored = study.get_trials()
    assert len(stored) == 10
    # Optuna's own constrained front (from storage) is ours
    assert {t.params for t, _ in S.pareto_front(first)} == {nb201_params_of(t) for t in study.best_trials}
    for t in stored:
        assert t.constraints == {"0": convs(nb201_arch(nb201_params_of(t))) - 2}
    # a new process picks the study up: the sampler sees all 10 and the study grows to 15
    again = run("nsga2", problem, 5, seed=2, storage=url, study_name="s")
    assert isinstance(again, S.OptunaStrategy)
    assert len(again.study.trials) == 15
    assert first.history[0][0].params == nb201_params_of(stored[0])


def test_tell_replays_history_without_repeats(problem: NB201Problem) -> None:
    old = run("random", problem, 40, seed=5)
    resumed = S.make("default", problem.space, problem.directions, 5, initial=10)
    for trial, result in old.history:
        resumed.tell(S.Trial(trial.number, trial.params), result)
    seen = {t.params for t, _ in old.history}
    new = [resumed.ask() for _ in range(20)]  # asked in parallel, nothing told yet
    assert len({t.params for t in new}) == 20 and not seen & {t.params for t in new}
    assert new[0].number == 40


def test_reinforce_reward_and_learning(problem: NB201Problem) -> None:
    s = S.make("reinforce", problem.space, ("maximize", "minimize"), 0, targets=(3.0,))
    assert isinstance(s, S.Reinforce)
    ok = S.Result((90.0, 6.0), (0.0,))
    assert s.reward(ok) == pytest.approx(90.0 * 2.0 ** -0.07)
    assert s.reward(S.Result((90.0, 6.0), (1.0,))) == 0.0
    assert s.reward(S.Result(None, (0.0,))) == 0.0
    solo = NB201Problem(["baseline_accuracy"], bench=problem.bench)
    learner = S.make("reinforce", solo.space, solo.directions, 0)
    rewards = []
    for _ in range(300):
        t = learner.ask()
        r = solo.evaluate(t.params)
        learner.tell(t, r)
        rewards.append(r.values[0] if r.values else 0.0)
    assert problem.bench is not None
    # the last 50 draws average better than 90% of the table (random draws: 50%)
    assert np.mean(rewards[-50:]) > np.percentile(problem.bench.values[:, 0], 90)


def test_bad_input(problem: NB201Problem) -> None:
    with pytest.raises(S.StrategyError, match="unknown strategy 'sa'"):
        S.make("sa", problem.space, problem.directions)
    with pytest.raises(S.StrategyError, match="accuracy-like objective"):
        S.make("reinforce", problem.space, ("minimize", "minimize"))
    with pytest.raises(S.StrategyError, match="directions"):
        S.make("random", problem.space, ("up",))
    with pytest.raises(S.StrategyError, match="strategy 'evolution'"):
        S.make("evolution", problem.space, ("maximize",), popsize=3)
    with pytest.raises(ObjectiveError, match="unknown objective or metric 'latency'"):
        NB201Problem(["baseline_accuracy", "latency"], bench=problem.bench)
    for text in ("latency<5ms", "latency<=fast", "<=3"):
        with pytest.raises(ObjectiveError, match="malformed constraint"):
            parse_constraint(text)
    assert parse_constraint("latency <= 5e-3") == Constraint("latency", "<=", 0.005)
    assert issubclass(S.StrategyError, HwnasError) and issubclass(ObjectiveError, HwnasError)


def test_space_codec() -> None:
    for i in (0, 4242, nb201.NUM_ARCHS - 1):
        arch = nb201.arch_from_index(i)
        assert nb201_arch(nb201_params(arch)) == arch
    rng = np.random.default_rng(0)
    p = NB201_SPACE.sample(rng)
    q = NB201_SPACE.mutate(p, rng)
    assert sum(a != b for a, b in zip(p, q, strict=True)) == 1
    assert NB201_SPACE.cardinality == nb201.NUM_ARCHS


def test_surrogate_predicts_unseen_cells(problem: NB201Problem) -> None:
    from hwnas.search.strategies.surrogate import Ridge

    rng = np.random.default_rng(0)
    train = list({NB201_SPACE.sample(rng) for _ in range(400)})
    test = [p for p in (NB201_SPACE.sample(rng) for _ in range(300)) if p not in set(train)]
    acc = np.array([[problem.evaluate(p).values[0]] for p in train])  # type: ignore[index]
    model = Ridge(NB201_SPACE.sizes)
    model.fit(train, acc)
    truth = np.array([problem.evaluate(p).values[0] for p in test])  # type: ignore[index]
    assert np.corrcoef(model.predict(test)[:, 0], truth)[0, 1] > 0.5  # 0.61 seen; no signal: 0


def test_default_beats_random_on_a_table_front(problem: NB201Problem) -> None:
    # baseline vs 1-day drift accuracy (tables only): after 100 evaluations the default's
    # candidates cover more of the exact front's hypervolume than random draws', every seed
    import moocore

    table = NB201Problem(["baseline_accuracy", "analog_drift_86400"], bench=problem.bench)
    assert problem.bench is not None
    cols = [problem.bench.column(m) for m in ("baseline_accuracy", "analog_drift_86400")]
    points = -problem.bench.values[:, cols]
    front = points[moocore.is_nondominated(points)]
    ref = front.max(axis=0) + 0.1 * (front.max(axis=0) - front.min(axis=0))

    def hv(name: str, seed: int) -> float:
        s = run(name, table, 100, seed)
        return float(moocore.hypervolume(np.array([-np.array(r.values) for _, r in s.history]), ref=ref))

    for seed in (0, 1):
        assert hv("default", seed) > hv("random", seed)


def test_neighbours_are_one_change_away() -> None:
    rng = np.random.default_rng(0)
    p = NB201_SPACE.sample(rng)
    near = NB201_SPACE.neighbours(p, rng)
    assert len(near) == len(set(near)) == 6 * 4
    assert all(sum(a != b for a, b in zip(p, q, strict=True)) == 1 for q in near)
    # read back through the space: vectors naming the same candidate count once
    folded = S.CategoricalSpace((3, 2), reader=lambda q: (min(q[0], 1), q[1]))
    assert sorted(folded.neighbours((0, 0), rng)) == [(0, 1), (1, 0)]


def test_default_expands_the_front(problem: NB201Problem) -> None:
    # after its random start, every candidate the default proposes is one change away from a
    # member of the feasible front of what it had been told
    s = S.make("default", problem.space, problem.directions, 0, initial=10, explore=0.0)
    for k in range(80):
        trial = s.ask()
        if k >= 10:
            front = {t.params for t, _ in S.pareto_front(s)}
            assert any(sum(a != b for a, b in zip(trial.params, f, strict=True)) == 1 for f in front)
        s.tell(trial, problem.evaluate(trial.params))


def test_default_exhausts_a_small_space_without_repeats() -> None:
    space = S.CategoricalSpace((3, 3, 3))
    s = S.make("default", space, ("minimize", "minimize"), 0, initial=4)
    for _ in range(27):
        trial = s.ask()
        x = np.array(trial.params, dtype=float)
        s.tell(trial, S.Result((float(x.sum()), float(((2 - x) ** 2).sum()))))
    assert len(s.seen()) == 27
