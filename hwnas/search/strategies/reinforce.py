"""A REINFORCE controller (Williams 1992) with MnasNet's reward (Tan et al. 2019; seed 004).

The policy is one softmax per dimension of the space (the factorized form of MnasNet's RNN
controller, enough for spaces whose choices are independent positions). The reward of a
candidate is   ACC · Π_k (c_k / T_k)^w   where ACC is the objective to maximize (the geometric
mean of them where there are several, e.g. accuracy and drift accuracy) and c_k the ones to
minimize (e.g. latency) with targets T_k: those given, or else the median of the first
`warmup` results. w = -0.07 is MnasNet's soft
trade-off. A candidate that breaks a hard constraint or fails gets reward 0 (MnasNet's hard
variant, β -> -∞). The policy follows the reward's advantage over a moving-average baseline,
divided by a moving standard deviation (rewards are percents bunched near the top of the range).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwnas.search.strategies.base import Result, Strategy, StrategyError, Trial


@dataclass
class Reinforce(Strategy):
    """Factorized softmax policy trained with REINFORCE on MnasNet's reward."""

    w: float = -0.07
    targets: tuple[float, ...] = ()
    learning_rate: float = 0.1
    baseline_decay: float = 0.9
    warmup: int = 20
    logits: list[np.ndarray] = field(default_factory=list, init=False)
    name = "reinforce"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._gain = [k for k, d in enumerate(self.directions) if d == "maximize"]
        self._cost = [k for k, d in enumerate(self.directions) if d == "minimize"]
        if not self._gain:
            raise StrategyError("the REINFORCE reward needs an accuracy-like objective to maximize")
        if self.targets and len(self.targets) != len(self._cost):
            raise StrategyError(f"{len(self.targets)} targets for {len(self._cost)} cost objectives")
        self.logits = [np.zeros(n) for n in self.space.sizes]
        self._baseline: float | None = None
        self._var = 0.0
        self._targets = np.asarray(self.targets, dtype=float) if self.targets else None

    def _probs(self) -> list[np.ndarray]:
        out = []
        for z in self.logits:
            e = np.exp(z - z.max())
            out.append(e / e.sum())
        return out

    def ask(self) -> Trial:
        """A candidate drawn from the policy."""
        params = tuple(int(self.rng.choice(len(p), p=p)) for p in self._probs())
        return Trial(self._next_number(), params)

    def reward(self, result: Result) -> float:
        """MnasNet's reward of a result (0 for a failed or infeasible one)."""
        if not result.feasible or result.values is None:
            return 0.0
        values = np.asarray(result.values, dtype=float)
        acc = float(np.exp(np.mean(np.log(np.maximum(values[self._gain], 1e-30)))))
        if not self._cost:
            return acc
        costs = np.maximum(values[self._cost], 1e-30)
        targets = self._targets if self._targets is not None else np.ones_like(costs)
        return acc * float(np.prod((costs / targets) ** self.w))

    def _observe(self, trial: Trial, result: Result) -> None:
        if self._targets is None and self._cost:
            done = [[r.values[k] for k in self._cost] for _, r in self.history if r.values is not None]
            if len(done) < self.warmup:
                return  # the reward's scale is not known yet: sample from the uniform policy
            self._targets = np.median(np.asarray(done, dtype=float), axis=0)
            for t, r in self.history[:-1]:
                self._update(t, r)
        self._update(trial, result)

    def _update(self, trial: Trial, result: Result) -> None:
        r = self.reward(result)
        if self._baseline is None:
            self._baseline = r
        advantage = r - self._baseline
        decay = self.baseline_decay
        self._baseline = decay * self._baseline + (1 - decay) * r
        self._var = decay * self._var + (1 - decay) * advantage**2
        if self._var <= 0.0:
            return
        step = self.learning_rate * float(np.clip(advantage / np.sqrt(self._var), -3.0, 3.0))
        for z, p, choice in zip(self.logits, self._probs(), trial.params, strict=True):
            grad = -p
            grad[choice] += 1.0  # d log softmax(z)[choice] / dz
            z += step * grad
