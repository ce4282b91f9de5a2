"""Graphviz DOT of a graph with each node filled by its share of the latency (white to red)
and its cost as an extra label line and a tooltip."""

from __future__ import annotations

from hwnas.backends.cost.report import Bound, CostReport, format_seconds
from hwnas.backends.render import HIDDEN_BOUNDS, describe, latency_shares
from hwnas.ir.dot import to_dot
from hwnas.ir.graph import Graph, Node

HOT = (214, 39, 40)  # the slowest node's fill: a red that dark text and white text both read on


def heat_level(share: float, hottest: float) -> float:
    """The share relative to the hottest node's, clamped to [0, 1]."""
    return 0.0 if hottest <= 0 else min(1.0, max(0.0, share / hottest))


def heat(share: float, hottest: float) -> str:
    """White for no time, red for the node that takes the most (as #rrggbb)."""
    t = heat_level(share, hottest)
    r, g, b = (round(255 + (c - 255) * t) for c in HOT)
    return f"#{r:02x}{g:02x}{b:02x}"


def ink(share: float, hottest: float) -> str:
    """Text colour that stays legible on `heat(share, hottest)`."""
    return "#ffffff" if heat_level(share, hottest) > 0.55 else "#222222"


def to_cost_dot(graph: Graph, report: CostReport) -> str:
    """`ir.dot.to_dot` with each node priced by `report` coloured by its latency share; free
    and fused nodes are grey and dashed, unpriced ones yellow."""
    by_name = {c.node: c for c in report.nodes}
    shares = latency_shares(report)
    hottest = max(shares.values(), default=0.0)

    def attrs(n: Node) -> dict[str, str]:
        c = by_name.get(n.name)
        if c is None:
            return {}
        # Graphviz reads the DOT strings' \u escapes literally, so keep labels ASCII.
        label = f"{format_seconds(c.latency_s)} ({100 * shares.get(n.name, 0.0):.1f}%) {c.bound.value}"
        out = {"label": label.replace("µ", "u"), "tooltip": describe(c).replace("µ", "u"), "style": "filled"}
        if c.bound in HIDDEN_BOUNDS:
            out.update(label=c.bound.value, fillcolor="#eeeeee", fontcolor="#888888", style="filled,dashed")
        elif c.bound is Bound.UNPRICED:
            out.update(fillcolor="#fff3b0")
        else:
            share = shares.get(n.name, 0.0)
            out.update(fillcolor=heat(share, hottest), fontcolor=ink(share, hottest))
        return out

    return to_dot(graph, node_attrs=attrs)
