"""Random search: uniform draws from the space, never one already told (the baseline every
NAS comparison starts from; Li & Talwalkar 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.search.strategies.base import Strategy, Trial


@dataclass
class RandomSearch(Strategy):
    """Uniform samples without repeats (until the space is exhausted)."""

    name = "random"

    def ask(self) -> Trial:
        """A uniformly random candidate not seen before (a repeat only once all are seen)."""
        seen = self.seen()
        params = self.space.sample(self.rng)
        for _ in range(100):
            if params not in seen:
                break
            params = self.space.sample(self.rng)
        return Trial(self._next_number(), params)
