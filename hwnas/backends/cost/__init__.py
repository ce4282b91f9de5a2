"""Cost models: `estimate(graph, target)` prices every node of a graph on a target.

One module per kind of target (roofline for cpu and gpu, mcu, fpga, analog), each with
per-op functions registered on its `CostTable`. Cost models are pure: they read the graph
and its annotations and never change it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from hwnas.backends.cost.base import Predictor
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.target import Target, load_target
from hwnas.errors import CostError
from hwnas.ir.graph import Graph

__all__ = ["Bound", "CostReport", "NodeCost", "Resource", "estimate"]

_MODULE = {"cpu": "roofline", "gpu": "roofline", "mcu": "mcu", "fpga": "fpga", "analog": "analog"}


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
    module = importlib.import_module(f"hwnas.backends.cost.{_MODULE[target.kind]}")
    return module.estimate(graph, target, predictor)
