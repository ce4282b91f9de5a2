"""A cheap surrogate for screening candidates: ridge regression on one-hot choices and, when
the space is small enough, their pairwise products (an edge op's effect depends on the ops
around it). Fitted again after every result in milliseconds; it ranks proposals, it never
replaces an evaluation."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from hwnas.search.strategies.base import Params

MAX_PAIR_FEATURES = 2000


class Ridge:
    """Per-objective ridge regression over choice-vector features."""

    def __init__(self, sizes: tuple[int, ...], alpha: float = 1.0) -> None:
        self.sizes, self.alpha = sizes, alpha
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        pairs = list(combinations(range(len(sizes)), 2))
        self.pairs = pairs if sum(sizes[a] * sizes[b] for a, b in pairs) <= MAX_PAIR_FEATURES else []
        self.weights: np.ndarray | None = None

    def features(self, params: list[Params]) -> np.ndarray:
        """One-hot choices, pairwise one-hot products, and a constant."""
        p = np.asarray(params, dtype=int)
        n = len(p)
        blocks = [np.ones((n, 1))]
        onehot = np.zeros((n, int(sum(self.sizes))))
        onehot[np.arange(n)[:, None], self.offsets + p] = 1.0
        blocks.append(onehot)
        for a, b in self.pairs:
            pair = np.zeros((n, self.sizes[a] * self.sizes[b]))
            pair[np.arange(n), p[:, a] * self.sizes[b] + p[:, b]] = 1.0
            blocks.append(pair)
        return np.hstack(blocks)

    def fit(self, params: list[Params], targets: np.ndarray) -> None:
        """Fit every column of `targets` (standardized inside)."""
        x = self.features(params)
        self.mean, self.scale = targets.mean(axis=0), targets.std(axis=0) + 1e-12
        y = (targets - self.mean) / self.scale
        gram = x.T @ x + self.alpha * np.eye(x.shape[1])
        self.weights = np.linalg.solve(gram, x.T @ y)

    def predict(self, params: list[Params]) -> np.ndarray:
        """Predicted targets, one row per candidate."""
        assert self.weights is not None
        return self.features(params) @ self.weights * self.scale + self.mean
