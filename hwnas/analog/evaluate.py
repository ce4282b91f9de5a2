"""Accuracy of an analog model at times after programming: each repeat programs the tiles afresh
(programming noise), then reads them at every time (drift, read noise, drift compensation),
as aihwkit's inference tiles simulate them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hwnas.analog.convert import AnalogModel


@dataclass(frozen=True)
class DriftPoint:
    """Accuracy at one time after programming, one figure per repeat."""

    t_s: float
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        """Mean accuracy over the repeats."""
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Sample standard deviation over the repeats (0 for one)."""
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def drift_accuracy(model: AnalogModel, x: np.ndarray, y: np.ndarray, times: Sequence[float], *, repeats: int = 1,
                   seed: int = 0, batch: int = 1024, on_step: Callable[[], None] | None = None) -> list[DriftPoint]:
    """Top-1 accuracy of `model` on (`x`, `y`) at each of `times` seconds after programming, over
    `repeats` programmings. Seeded through torch (programming noise, drift, read noise); aihwkit's
    C++ tiles draw their ADC output noise from a generator of their own, which 1.2 does not seed.
    `on_step` is called after each (repeat, time)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    acc: dict[float, list[float]] = {t: [] for t in times}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(repeats):
            model.program()
            for t in times:
                model.drift(t)
                acc[t].append(float((model.logits(x, batch).argmax(axis=1) == y).mean()))
                if on_step is not None:
                    on_step()
    return [DriftPoint(t, tuple(acc[t])) for t in times]
