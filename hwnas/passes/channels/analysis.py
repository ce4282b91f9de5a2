"""Channel atoms, the ties ops put between them, and the groups their connected components form.

`ChannelAnalysis(graph)` reads the graph and changes nothing: it gives every channel of every
tensor that carries channels an atom, lets each node's rule (`rules`) tie, block or slice
atoms, and finds the connected components (scipy). `remove` then rewrites the graph. Call
`private_weights(graph)` first: a rule only slices a constant that one node reads.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hwnas.ir.annotations import SparsitySpec
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import Channels, refresh_types, traits
from hwnas.ir.types import Dim, TensorType
from hwnas.passes.channels.weights import set_const

Removed = Callable[[Value], np.ndarray]
"""Positions of the channels removed from a value (what a fixup is given)."""
Fixup = Callable[[Removed], None]
"""Edits a node's attributes or shape inputs once channels are removed (a depthwise conv's
`group`, a Split's sizes)."""
Rule = Callable[["ChannelAnalysis", Node], None]
"""How one op ties, blocks and slices channel atoms."""

_RULES: dict[str | Channels, Rule] = {}


def channel_rule(*keys: str | Channels) -> Callable[[Rule], Rule]:
    """Registers the decorated function as the channel rule of the ops named in `keys`, or of
    every op whose registry trait `channels` is one of the `Channels` in `keys` (an op's own
    rule wins over its category's). An op with neither blocks the channels it reads."""

    def deco(fn: Rule) -> Rule:
        for key in keys:
            _RULES[key] = fn
        return fn

    return deco


def rule_for(node: Node) -> Rule | None:
    """The rule the analysis applies to `node`, or None when it blocks the node's channels."""
    if node.domain:
        return None
    return _RULES.get(node.op) or _RULES.get(traits(node).channels)


@dataclass
class ChannelGroup:
    """Channels that are pruned together: produced by `sources` (node names)."""

    name: str
    sources: tuple[str, ...]
    components: list[int] = field(default_factory=list)
    """Prunable component ids: one per channel of the group, or per channel position shared
    by every group of a grouped convolution."""
    kept: int = 0
    """Channels that must stay (they reach a graph output or an op that cannot be sliced)."""
    why_kept: tuple[str, ...] = ()
    """Why the kept channels must stay, one phrase per distinct reason ("they reach graph
    output 'y'", "Reshape node 'r' reads them and cannot be sliced")."""
    cost: float = 0.0
    """Weight elements one removed channel takes with it (filters, input slices, BN)."""

    @property
    def channels(self) -> int:
        """All channels of the group, prunable or kept."""
        return len(self.components) + self.kept

    def removable(self, ratio: float, multiple: int = 1) -> int:
        """How many channels pruning `ratio` of the group takes: floor(ratio × channels),
        fewer when the kept count is rounded up to a multiple of `multiple` (kernels run
        best on channel counts their vector width divides), never all of them and never
        one that must stay."""
        keep = self.channels - math.floor(ratio * self.channels + 1e-9)
        if multiple > 1:
            keep = min(self.channels, math.ceil(keep / multiple) * multiple)
        return max(0, min(self.channels - max(keep, 1), len(self.components)))


@dataclass
class Slice:
    """Slice `node.input(index)` (a constant) along `axis` by the channels of `value` removed
    (by their positions modulo `period` when it is set: a grouped convolution's weight holds
    one input group's channels, which every group shares)."""

    node: Node
    index: int
    axis: int
    value: Value
    period: int = 0

    @property
    def array(self) -> np.ndarray:
        """The constant sliced (rules only slice constant inputs)."""
        v = self.node.operand(self.index)
        assert v.const is not None, f"{self.node.name}: input {self.index} is not a constant"
        return v.const


class ChannelAnalysis:
    """Channel atoms tied as the ops' rules demand (see the package docstring). Reads the
    graph and changes nothing until `remove`."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._base: dict[int, int] = {}
        self._size: dict[int, int] = {}
        self._axis: dict[int, int] = {}
        self._shapes: dict[int, tuple[Dim, ...]] = {}
        self.n_atoms = 0
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._blocked: list[tuple[np.ndarray, str]] = []
        self._reader: Node | None = None
        self.sources: list[tuple[Node, Value]] = []
        """(layer, output) pairs whose channels the groups are named after and scored by."""
        self.slices: list[Slice] = []
        self.fixups: list[tuple[Node, Fixup]] = []
        for n in graph.nodes:
            self._reader = n  # a rule's block() is that node's doing
            rule = rule_for(n)
            if rule is None:
                self.block_all(n)
            else:
                rule(self, n)
        self._reader = None
        for v in graph.outputs:
            self.block(v, f"they reach graph output '{v.name}'")
        self._components()

    # -- atoms: what rules use
    def shape(self, v: Value | None) -> tuple[Dim, ...] | None:
        """The value's shape as the analysis knows it (a rule may know more than its type)."""
        if v is None:
            return None
        return self._shapes.get(id(v), v.shape)

    def know_shape(self, v: Value, shape: tuple[Dim, ...]) -> None:
        """Records a shape the graph's types do not know; `remove` must then retype `v` (a
        rule that calls this adds a fixup doing so)."""
        self._shapes[id(v)] = shape

    def track(self, v: Value, axis: int) -> bool:
        """Gives each channel of `v` along `axis` an atom; False when that axis is not a known
        integer (the value then carries no channels)."""
        shape = self.shape(v)
        if not shape:
            return False
        axis = axis % len(shape)
        size = shape[axis]
        if not isinstance(size, int):
            return False
        self._base[id(v)], self._size[id(v)], self._axis[id(v)] = self.n_atoms, size, axis
        self.n_atoms += size
        return True

    def tracked(self, v: Value | None) -> bool:
        """Whether `v` carries channel atoms."""
        return v is not None and id(v) in self._base

    def axis(self, v: Value) -> int:
        """The channel axis of a tracked value."""
        return self._axis[id(v)]

    def size(self, v: Value) -> int:
        """The channel count of a tracked value."""
        return self._size[id(v)]

    def atoms(self, v: Value) -> np.ndarray:
        """The atom ids of a tracked value's channels, in order."""
        return np.arange(self._size[id(v)]) + self._base[id(v)]

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        """Atoms a[i] and b[i] go together."""
        self._edges.append((np.asarray(a), np.asarray(b)))

    def tie_across_groups(self, atoms: np.ndarray, groups: int, per_group: int) -> None:
        """Ties the atoms at the same position of each of `groups` equal groups."""
        table = atoms.reshape(groups, per_group)
        for j in range(1, groups):
            self.tie(table[0], table[j])

    def block(self, v: Value | None, reason: str = "") -> None:
        """The channels of `v` (if tracked) cannot be removed; `reason` says why (by default:
        the node whose rule runs reads them and cannot be sliced)."""
        if v is not None and self.tracked(v):
            if not reason:
                n = self._reader
                reason = f"{n.op} node '{n.name}' reads them and cannot be sliced" if n else "they cannot be sliced"
            self._blocked.append((self.atoms(v), reason))

    def block_all(self, n: Node) -> None:
        """The channels of every input of `n` cannot be removed."""
        for v in n.inputs:
            self.block(v)

    def add_source(self, n: Node, out: Value) -> None:
        """`out`'s channels are `n`'s filters: they name and score the group."""
        self.sources.append((n, out))

    def add_slice(self, s: Slice) -> None:
        """A constant to slice when channels of `s.value` are removed."""
        self.slices.append(s)

    def add_fixup(self, n: Node, fix: Fixup) -> None:
        """An edit of `n` that `remove` makes once the channels are gone."""
        self.fixups.append((n, fix))

    # -- components and groups
    def _components(self) -> None:
        n = self.n_atoms
        if self._edges:
            a = np.concatenate([e[0] for e in self._edges])
            b = np.concatenate([e[1] for e in self._edges])
        else:
            a = b = np.zeros(0, np.int64)
        adj = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
        self.n_components, self.label = connected_components(adj, directed=False)
        self.comp_blocked = np.zeros(self.n_components, bool)
        self.why_blocked: dict[int, str] = {}
        """Component → the first reason it is kept."""
        for atoms, reason in self._blocked:
            comps = self.label[atoms]
            fresh = np.unique(comps[~self.comp_blocked[comps]])
            self.comp_blocked[fresh] = True
            self.why_blocked.update(dict.fromkeys(fresh.tolist(), reason))

    def groups(self) -> list[ChannelGroup]:
        """The layer groups, each with its prunable components and the weight elements one
        removed channel takes with it."""
        comp_sources: dict[int, set[str]] = defaultdict(set)
        for node, v in self.sources:
            for c in np.unique(self.label[self.atoms(v)]):
                comp_sources[int(c)].add(node.name)
        by_key: dict[tuple[str, ...], ChannelGroup] = {}
        for c, names in sorted(comp_sources.items()):
            key = tuple(sorted(names))
            g = by_key.setdefault(key, ChannelGroup("+".join(key), key))
            if self.comp_blocked[c]:
                g.kept += 1
                if self.why_blocked[c] not in g.why_kept:
                    g.why_kept += (self.why_blocked[c],)
            else:
                g.components.append(c)
        cost = np.zeros(self.n_components)
        for s in self.slices:
            w = s.array
            per_channel = w.size / max(w.shape[s.axis], 1)
            if s.period:  # one weight position per `groups` tied channels
                per_channel *= s.period / self.size(s.value)
            np.add.at(cost, self.label[self.atoms(s.value)], per_channel)
        for g in by_key.values():
            g.cost = float(cost[g.components].mean()) if g.components else 0.0
        return list(by_key.values())

    def importance(self, criterion: str) -> np.ndarray:
        """One score per component: the norms of the filters it removes, each divided by the
        mean norm of its layer (so layers of different scale compare), summed."""
        score = np.zeros(self.n_components)
        for node, v in self.sources:
            if criterion == "bn":
                bn = next((u for u in v.users if u.op == "BatchNormalization"), None)
                gamma = bn.input(1) if bn is not None else None
                if gamma is not None and gamma.const is not None:
                    norms = np.abs(gamma.const.astype(np.float64)).ravel()
                    np.add.at(score, self.label[self.atoms(v)], norms / max(norms.mean(), 1e-12))
                    continue
            weight = node.operand(1).const
            assert weight is not None, f"{node.name}: a source's weight is a constant"
            w = weight.astype(np.float64)
            axis = 0 if node.op == "Conv" or (node.op == "Gemm" and node.attr_int("transB", 0)) else 1
            w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
            norms = np.abs(w).sum(1) if criterion in ("l1", "bn") else np.sqrt((w * w).sum(1))
            np.add.at(score, self.label[self.atoms(v)], norms / max(norms.mean(), 1e-12))
        return score

    # -- rewriting
    def remove(self, components: np.ndarray) -> int:
        """Removes the channels of `components` from every tensor and weight; returns the
        number of channels removed from the sources."""
        drop = np.zeros(self.n_components, bool)
        drop[components] = True
        assert not (drop & self.comp_blocked).any()
        cache: dict[int, np.ndarray] = {}

        def removed(v: Value) -> np.ndarray:
            if id(v) not in cache:
                cache[id(v)] = np.flatnonzero(drop[self.label[self.atoms(v)]])
            return cache[id(v)]

        done: dict[tuple[int, int, int], np.ndarray] = {}
        for s in self.slices:
            idx = removed(s.value)
            if s.period:
                idx = np.unique(idx % s.period)
            if len(idx) == 0:
                continue
            key = (id(s.node), s.index, s.axis)
            if key in done:
                continue
            done[key] = idx
            set_const(self.graph, s.node, s.index, np.delete(s.array, idx, axis=s.axis), "pruned")
        for _, fix in self.fixups:
            fix(removed)
        gone = sum(len(removed(v)) for _, v in self.sources)
        for node, v in self.sources:
            keep = self.size(v) - len(removed(v))
            if len(removed(v)):
                old = node.ann.sparsity
                node.ann.sparsity = SparsitySpec(
                    weight_sparsity=old.weight_sparsity if old else 0.0, structured=True, kept_channels=keep)
        refresh_types(self.graph)
        return gone


def retype(v: Value, shape: tuple[Dim, ...]) -> None:
    """Gives `v` a new shape, keeping its dtype (a fixup's edit of a shape the analysis knew)."""
    assert v.type is not None, f"value '{v.name}' has no type to reshape"
    v.type = TensorType(v.type.dtype, shape)
