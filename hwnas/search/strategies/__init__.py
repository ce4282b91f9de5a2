"""Search strategies behind one ask/tell interface (`base.Strategy`), one module each.

`make(name, space, directions, seed, **options)` builds one by name: `random`, `evolution`
(regularized evolution), `reinforce` (MnasNet-style controller), Optuna's `tpe`, `nsga2`,
`nsga3` and `gp`, and `default`, hwnas's choice (`pareto_local`: Pareto local search).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hwnas.search.strategies.base import CategoricalSpace, Params, Result, Strategy, StrategyError, Trial, pareto_front
from hwnas.search.strategies.evolution import RegularizedEvolution
from hwnas.search.strategies.optuna_samplers import SAMPLERS, OptunaStrategy
from hwnas.search.strategies.pareto_local import ParetoLocalSearch
from hwnas.search.strategies.random_search import RandomSearch
from hwnas.search.strategies.reinforce import Reinforce

__all__ = ["STRATEGIES", "CategoricalSpace", "OptunaStrategy", "ParetoLocalSearch", "Params", "RandomSearch",
           "RegularizedEvolution", "Reinforce", "Result", "Strategy", "StrategyError", "Trial", "make", "pareto_front"]

STRATEGIES = ("default", "random", "evolution", "reinforce", *SAMPLERS)
_CLASSES: dict[str, type[Strategy]] = {"default": ParetoLocalSearch, "random": RandomSearch,
                                       "evolution": RegularizedEvolution, "reinforce": Reinforce}


def make(name: str, space: CategoricalSpace, directions: Sequence[str], seed: int = 0, **options: Any) -> Strategy:
    """The strategy `name` (one of `STRATEGIES`) on `space`; `options` are its dataclass fields
    (e.g. `storage=` for Optuna's, `targets=` for REINFORCE)."""
    if name in SAMPLERS:
        return OptunaStrategy(space, tuple(directions), seed, sampler=name, **options)
    cls = _CLASSES.get(name)
    if cls is None:
        raise StrategyError(f"unknown strategy '{name}' (known: {', '.join(STRATEGIES)})")
    try:
        return cls(space, tuple(directions), seed, **options)
    except TypeError as e:
        raise StrategyError(f"strategy '{name}': {e}") from None
