"""The IR's JSON with every node carrying its cost, and the report's totals beside the graph.

The extra keys (`cost` on each node, `cost` at the top) are ignored by `load_json`, so an
annotated dump still loads back as the same graph.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.backends.cost.report import CostReport
from hwnas.ir.graph import Graph


def cost_json(graph: Graph, report: CostReport) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The IR document and its weight arrays, each node with a `cost` object (None for
    nodes the report does not list)."""
    from hwnas.ir.serialize import to_json

    doc, arrays = to_json(graph)
    by_name = {c.node: c for c in report.nodes}
    for d in doc["nodes"]:
        c = by_name.get(d["name"])
        d["cost"] = None if c is None else finite(c.to_json())
    totals = report.to_json()
    del totals["nodes"]  # already on the nodes
    doc["cost"] = finite(totals)
    return doc, arrays


def finite(x: Any) -> Any:
    """`x` with infinities and NaNs as None: an unlimited resource must still be strict JSON
    (json.dumps would write `Infinity`, which JSON parsers outside Python reject)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x


def save_cost_json(graph: Graph, report: CostReport, path: Path) -> tuple[Path, Path]:
    """Write GRAPH.json and GRAPH.npz beside it; both appear whole or not at all."""
    from hwnas.files import write_atomic

    weights = path.with_suffix(".npz")
    doc, arrays = cost_json(graph, report)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)  # raw bytes only: string tensors live in the JSON
    write_atomic(weights, buf.getvalue())
    write_atomic(path, json.dumps(doc, indent=1))
    return path, weights
