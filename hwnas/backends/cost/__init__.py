"""Cost models: `estimate(graph, target)` prices every node of a graph on a target.

One module per kind of target (roofline for cpu and gpu, mcu, fpga, analog), each with
per-op functions registered on its `CostTable` and an `estimate` function that says which
kinds it prices with `@cost_model("cpu", "gpu")`. `estimate` dispatches on the target's kind
through that registry: the built-in modules are imported on first use, and a kind of the
user's own is priced by whatever module of theirs registered it (see `hwnas.backends.target`).
Cost models are pure: they read the graph and its annotations and never change it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from hwnas.backends.cost.base import Predictor
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.target import Target, load_target
from hwnas.errors import CostError
from hwnas.ir.graph import Graph

__all__ = ["Bound", "CostModel", "CostReport", "NodeCost", "Resource", "available_cost_models", "cost_model",
           "estimate"]

# The cost modules hwnas ships; each registers the kinds it prices when imported.
_BUILTIN_MODULES = ("roofline", "mcu", "fpga", "analog")


class CostModel(Protocol):
    """A whole-graph cost model: the report of `graph` on `target`, calibrated by `predictor` if given."""

    def __call__(self, graph: Graph, target: Target, predictor: Predictor | None = None) -> CostReport: ...


_MODELS: dict[str, CostModel] = {}
_builtins_loaded = False


def cost_model(*kinds: str) -> Callable[[CostModel], CostModel]:
    """Decorator: the function prices targets of `kinds` (`@cost_model("cpu", "gpu")` on a
    module's `estimate`). A kind has one cost model; registering another for it is refused."""
    if not kinds:
        raise TypeError("cost_model needs at least one kind name")

    def register(fn: CostModel) -> CostModel:
        for kind in kinds:
            old = _MODELS.get(kind)
            if old is not None and _qualified(old) != _qualified(fn):
                raise TypeError(f"kind '{kind}' is already priced by {_qualified(old)}")
            _MODELS[kind] = fn
        return fn

    return register


def available_cost_models() -> dict[str, str]:
    """Each kind with a cost model, and the function that prices it (`module.function`)."""
    _load_builtins()
    return {kind: _qualified(fn) for kind, fn in _MODELS.items()}


def estimate(graph: Graph, target: Target | str | Path, predictor: Predictor | None = None) -> CostReport:
    """Price `graph` on `target` (a Target, a shipped target's name or a TOML path).
    With a predictor (a calibration of this target), its latencies replace the analytical ones."""
    if not isinstance(target, Target):
        target = load_target(target)
    symbolic = [v.name for v in graph.inputs if v.type is not None and v.type.shape is not None
                and not v.type.is_static]
    if symbolic:
        raise CostError(f"graph '{graph.name}': input {', '.join(symbolic)} has symbolic dims; bind them first "
                        f"(the pass bind-dims)")
    _load_builtins()
    model = _MODELS.get(target.kind)
    if model is None:
        raise CostError(f"target '{target.name}': no cost model prices {target.kind} targets (priced: "
                        f"{', '.join(_MODELS)}; a kind's cost module registers its estimate with @cost_model)")
    return model(graph, target, predictor)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for name in _BUILTIN_MODULES:
            importlib.import_module(f"{__name__}.{name}")
        _builtins_loaded = True


def _qualified(fn: object) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
