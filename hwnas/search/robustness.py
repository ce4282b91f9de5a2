"""The search's analog robustness metric: `analog_noise`, a candidate's output error-to-signal
ratio on an analog target's tiles a day after programming (`backends.cost.analog_noise`:
weight-free, from the crossbar mapping; no training, no aihwkit). Lower is more robust; a
search minimizes it (`--objectives accuracy,analog_noise`) or bounds it
(`--constraint analog_noise<=0.02`).

A NAS-Bench-201 network is a chain of segments (stem, 5 cells, reduction, 5 cells, reduction,
5 cells, head) with one tensor between two of them, so its ratio is the segments' propagated in
turn: the skeleton is built once and a cell's graph once per stage (3 small graphs instead of
the ~200-node network). Other spaces build the candidate's IR (whose placements, such as the
joint space's, count) and walk it. Both are memoized per candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from hwnas.backends.cost.analog_noise import CLEAN, analog_noise, propagate
from hwnas.backends.target import Analog, Target, load_target
from hwnas.search.cost import NB201Segments
from hwnas.search.objectives import ObjectiveError
from hwnas.search.spaces import Space
from hwnas.search.spaces.nasbench201 import Cell, parse_arch
from hwnas.search.spaces.nb201 import NB201Space

METRIC = "analog_noise"
"""The metric's name in studies (minimized)."""
DAY_S = 86400.0


class RobustnessError(ObjectiveError):
    """The robustness metric asked of a target that has no analog tiles."""


def analog_target(target: Target | str) -> Target:
    """`target` loaded, or RobustnessError when it is not an analog crossbar target."""
    t = target if isinstance(target, Target) else load_target(target)
    if t.kind != "analog":
        raise RobustnessError(f"{METRIC} prices crossbar tiles: it needs an analog target (e.g. analog-pcm), "
                              f"not {t.name} ({t.kind})")
    return t


class NB201Noise:
    """`analog_noise` of NAS-Bench-201 cells in `space`'s network, segment by segment."""

    def __init__(self, target: Target | str = "analog-pcm", space: NB201Space | None = None,
                 t_s: float = DAY_S) -> None:
        self.target = analog_target(target)
        self.hw = self.target.section(Analog)
        self.network = NB201Segments(space)
        self.space = self.network.space
        self.t_s = t_s
        self._seen: dict[tuple[str, ...], float] = {}

    def ratio(self, cell: Cell | str) -> float:
        """The network's output error-to-signal ratio (equal to `analog_noise` on the whole network)."""
        cell = parse_arch(cell) if isinstance(cell, str) else cell
        found = self._seen.get(cell.ops)
        if found is not None:
            return found
        state = CLEAN
        for graph in self.network.segments(cell):
            state = propagate(graph, self.hw, self.t_s, state)
        self._seen[cell.ops] = state.ratio
        return state.ratio


def noise_metric(space: Space, target: Target | str, t_s: float = DAY_S) -> Callable[[Hashable], float]:
    """A function giving a candidate of `space` its `analog_noise` on `target` (memoized):
    `NB201Noise` for NAS-Bench-201 cells, else `analog_noise` on the candidate's IR."""
    t = analog_target(target)
    if type(space) is NB201Space:
        return NB201Noise(t, space, t_s).ratio  # type: ignore[return-value]
    seen: dict[str, float] = {}

    def ratio(candidate: Hashable) -> float:
        key = space.key(candidate)
        if key not in seen:
            seen[key] = analog_noise(space.build_ir(candidate), t, t_s).ratio
        return seen[key]

    return ratio
