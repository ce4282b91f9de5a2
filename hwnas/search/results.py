"""What a study found: its Pareto front, hypervolume, and plots.

The front is taken over the feasible trials (every constraint met, the candidate fits the
target). Hypervolume is computed by moocore on the objectives turned to minimization
(accuracies negated). Its reference point is stated with every figure: by default each
objective's worst feasible value plus a tenth of its range over the feasible trials
(`reference_point`), which is what a study alone can know; a benchmark that knows the whole
space passes its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import moocore
import numpy as np

from hwnas.search.study import Evaluated


@dataclass
class Front:
    """The feasible trials, the non-dominated ones among them, and the hypervolume."""

    directions: tuple[str, ...]
    feasible: list[Evaluated]
    front: list[Evaluated]
    reference: np.ndarray  # in minimized form
    hypervolume: float

    def minimized(self, trials: Sequence[Evaluated]) -> np.ndarray:
        """Objective values of `trials`, turned to minimization (one row each)."""
        return minimized(trials, self.directions)


def minimized(trials: Sequence[Evaluated], directions: Sequence[str]) -> np.ndarray:
    """The objective values of feasible trials as a minimization matrix."""
    sign = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    if not trials:
        return np.zeros((0, len(directions)))
    return np.array([t.values for t in trials], dtype=float) * sign


def reference_point(points: np.ndarray) -> np.ndarray:
    """Worst value of each objective plus a tenth of its range (1 where the range is 0)."""
    worst, best = points.max(axis=0), points.min(axis=0)
    span = np.where(worst > best, worst - best, 1.0)
    return worst + 0.1 * span


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of minimization points against `reference` (points beyond it add nothing)."""
    inside = points[np.all(points < reference, axis=1)] if len(points) else points
    return float(moocore.hypervolume(inside, ref=reference)) if len(inside) else 0.0


def pareto(trials: Sequence[Evaluated], directions: Sequence[str],
           reference: np.ndarray | None = None) -> Front:
    """The front of the feasible trials (duplicates of a candidate counted once)."""
    unique: dict[str, Evaluated] = {}
    for t in trials:
        if t.feasible:
            unique.setdefault(t.key, t)
    feasible = list(unique.values())
    points = minimized(feasible, directions)
    if not feasible:
        ref = np.asarray(reference, dtype=float) if reference is not None else np.zeros(len(directions))
        return Front(tuple(directions), [], [], ref, 0.0)
    mask = moocore.is_nondominated(points)
    front = sorted((t for t, m in zip(feasible, mask, strict=True) if m), key=lambda t: tuple(t.values or ()))
    ref = reference_point(points) if reference is None else np.asarray(reference, dtype=float)
    return Front(tuple(directions), feasible, front, ref, hypervolume(points, ref))


def hypervolume_curve(trials: Sequence[Evaluated], directions: Sequence[str], reference: np.ndarray) -> list[float]:
    """Hypervolume of the feasible trials among the first k stored, for every k."""
    out, points = [], []
    sign = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    hv = 0.0
    for t in trials:
        if t.feasible and t.values is not None:
            points.append(np.asarray(t.values, dtype=float) * sign)
            hv = hypervolume(np.array(points), reference)
        out.append(hv)
    return out


UNITS = {"latency": "s", "energy": "J", "peak_memory": "bytes", "weights": "bytes", "params": "weights"}


def _label(objective: str) -> str:
    unit = UNITS.get(objective, "%" if "accuracy" in objective or "drift" in objective else "")
    return f"{objective} ({unit})" if unit else objective


def save_plots(trials: Sequence[Evaluated], front: Front, objectives: Sequence[str], folder: Path) -> list[Path]:
    """A Pareto plot (the first two objectives; every trial, the front highlighted) and a
    hypervolume-over-trials plot, as PNG files in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    ok = [t for t in trials if t.values is not None]
    if ok and len(objectives) >= 2:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        all_v = np.array([t.values for t in ok], dtype=float)
        feas = np.array([t.feasible for t in ok])
        ax.scatter(all_v[~feas, 0], all_v[~feas, 1], s=8, c="#cccccc", label="infeasible")
        ax.scatter(all_v[feas, 0], all_v[feas, 1], s=8, c="#7799bb", label="feasible")
        if front.front:
            fv = np.array([t.values for t in front.front], dtype=float)
            order = np.argsort(fv[:, 0])
            ax.plot(fv[order, 0], fv[order, 1], "o-", c="#cc3311", ms=4, label="Pareto front")
        ax.set_xlabel(_label(objectives[0]))
        ax.set_ylabel(_label(objectives[1]))
        ax.legend(loc="best", fontsize=8)
        ax.set_title(f"{len(trials)} trials, {len(front.front)} on the front")
        fig.tight_layout()
        paths.append(folder / "pareto.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    curve = hypervolume_curve(trials, front.directions, front.reference)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(curve) + 1), curve, c="#cc3311")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume")
    ax.set_title("reference " + ", ".join(f"{r:.4g}" for r in front.reference) + " (minimized)")
    fig.tight_layout()
    paths.append(folder / "hypervolume.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
