"""Rewrite rules and the one greedy driver that applies them to a fixpoint.

A rule has a pattern (the anchor op types), a check that returns why it does not apply
(or None when it does), and a rewrite that edits the graph around the anchor node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hwnas.ir.graph import Graph, Node

Check = Callable[[Node], str | None]
Rewrite = Callable[[Node], None]


@dataclass(frozen=True)
class Rule:
    """A rewrite: the ops it anchors on, a check that returns why it does not apply (None
    when it does), and the rewrite of the graph around the anchor node."""

    name: str
    ops: tuple[str, ...]
    check: Check
    rewrite: Rewrite

    def matches(self, node: Node) -> bool:
        """True when the node is one of the pattern's ops (default ONNX domain only)."""
        return not node.domain and node.op in self.ops


@dataclass
class RewriteStats:
    """What `apply_rules` did: how often each rule fired, and where checks declined."""

    applied: Counter[str] = field(default_factory=Counter)
    declined: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Per rule, the (node, reason) pairs where its pattern matched but its check said no."""

    @property
    def changed(self) -> bool:
        """True when any rule fired."""
        return sum(self.applied.values()) > 0


def apply_rules(graph: Graph, rules: Sequence[Rule], max_rounds: int = 100) -> RewriteStats:
    """Apply rules greedily, sweeping the graph until a sweep changes nothing."""
    stats = RewriteStats()
    # The rules each op can match, in order: a sweep asks only those (`Rule.matches`, unless a
    # rule's class matches otherwise: then every rule is asked).
    by_op: dict[str, list[Rule]] | None = {}
    for r in rules:
        if by_op is None or type(r).matches is not Rule.matches:
            by_op = None
            continue
        for op in dict.fromkeys(r.ops):  # once per rule, as a sweep asks it
            by_op.setdefault(op, []).append(r)
    for _ in range(max_rounds):
        fired = False
        stats.declined = {}
        for node in list(graph.nodes):
            if node.graph is not graph:  # removed by an earlier rewrite in this sweep
                continue
            candidates = rules if by_op is None else () if node.domain else by_op.get(node.op, ())
            for r in candidates:
                if not r.matches(node):
                    continue
                reason = r.check(node)
                if reason is not None:
                    stats.declined.setdefault(r.name, []).append((node.name, reason))
                    continue
                r.rewrite(node)
                stats.applied[r.name] += 1
                fired = True
                break
        if not fired:
            break
    return stats
