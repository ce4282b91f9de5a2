"""Views of a cost report beside its graph: HTML page, cost-coloured DOT, annotated JSON, plots.

Every renderer works from a `CostReport` alone (any target kind), matching its nodes to the
graph's by name, so a report that prices fewer nodes than the graph has still renders.
"""

from __future__ import annotations

from hwnas.backends.cost.report import Bound, CostReport, NodeCost, format_bytes, format_joules, format_seconds

__all__ = ["HIDDEN_BOUNDS", "cost_comments", "data_dependent_text", "describe", "latency_shares", "totals_lines",
           "unpriced_text"]

# Bounds with no kernel of their own: views, folded nodes and fused activations.
HIDDEN_BOUNDS = frozenset({Bound.FREE, Bound.FUSED})


def latency_shares(report: CostReport) -> dict[str, float]:
    """Each node's fraction of the summed node latencies. The sum, not `report.latency_s`:
    on pipelined targets the total is not the sum, and shares should still add to one."""
    total = sum(c.latency_s for c in report.nodes if c.latency_s is not None)
    if total <= 0:
        return {c.node: 0.0 for c in report.nodes}
    return {c.node: (c.latency_s or 0.0) / total for c in report.nodes}


def describe(c: NodeCost) -> str:
    """One line for a tooltip or a comment: latency, energy, bytes, bound and the note."""
    text = (f"latency {format_seconds(c.latency_s)}, energy {format_joules(c.energy_j)}, "
            f"bytes {format_bytes(c.bytes_moved)}, bound {c.bound.value}")
    return f"{text}; {c.note}" if c.note else text


def totals_lines(report: CostReport) -> list[str]:
    """The totals as short lines: latency, energy, peak memory, weights, fit, unpriced ops."""
    lines = [
        f"latency {format_seconds(report.latency_s)}",
        f"energy {format_joules(report.energy_j)}",
        f"peak memory {format_bytes(report.peak_memory_bytes)}",
        f"weights {format_bytes(report.weight_bytes)}",
        "fits" if report.fits else "does not fit: " + "; ".join(report.does_not_fit),
    ]
    if report.unpriced:
        lines.append("unpriced ops (not in the totals): " + unpriced_text(report))
    if report.data_dependent:
        lines.append(data_dependent_text(report))
    return lines


def data_dependent_text(report: CostReport) -> str:
    """'PRelu ×3 take a time that depends on ...': the ops whose price no shape settles."""
    ops = ", ".join(f"{op} ×{n}" for op, n in sorted(report.data_dependent.items()))
    return f"{ops}: time depends on the input's values, not only its shape (each node's note says how)"


def unpriced_text(report: CostReport) -> str:
    """The ops the report could not price, with their counts: 'Foo ×2, Bar ×1'."""
    return ", ".join(f"{op} ×{n}" for op, n in sorted(report.unpriced.items()))


def cost_comments(report: CostReport) -> str:
    """The report as `//` comment lines, which the IR text parser skips, so an annotated
    text dump still parses back."""
    lines = [f"// cost on {report.target} ({report.kind}, {report.method}): " + ", ".join(totals_lines(report))]
    lines += [f"// {c.node} ({c.op}): {describe(c)}" for c in report.nodes]
    # A newline inside a node name would end the comment and break parsing.
    return "\n".join(" ".join(ln.splitlines()) for ln in lines) + "\n"
