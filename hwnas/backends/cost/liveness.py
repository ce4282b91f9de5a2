"""Peak activation memory over an execution order, and a search for an order that lowers it.

Buffers: each run-time value produced by a node (and each graph input) is one buffer, live
from its producer until its last consumer has run; graph outputs stay live to the end.
Views (Reshape, Flatten...) alias their input's buffer. An element-wise op whose input
buffer dies at that op writes in place when the sizes match. Values known at compile
time (weights) are not activations.

After running a set S of nodes, the live buffers depend on S only, so the best order is a
shortest-path problem over such sets (Serenity, Ahn et al., MLSys 2020): a breadth-first
dynamic program keeps, per set, the lowest peak that reaches it. Wide graphs cap the
number of sets kept per step (a beam), which makes the result a heuristic there; the
report says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hwnas.backends.cost.base import is_compile_time
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import static_values, traits

SizeFn = Callable[[Node | None, Value], int]


@dataclass(frozen=True)
class Schedule:
    """An execution order and the peak activation memory it needs."""

    order: list[Node]
    peak_bytes: int
    exact: bool
    """True when the dynamic program explored every reachable set (the order is optimal
    under this buffer model)."""
    given_peak_bytes: int
    """Peak of the graph's own order, for comparison."""


class _Buffers:
    def __init__(self, graph: Graph, size: SizeFn, in_place: bool) -> None:
        static = static_values(graph)
        self.nodes = [n for n in graph.nodes if not is_compile_time(n, static)]
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.buffer_of: dict[int, int] = {}  # id(value) -> buffer id
        self.size: list[int] = []
        self.users: list[int] = []  # bitmask of nodes reading each buffer
        self.makes: list[list[int]] = [[] for _ in self.nodes]  # buffers each node allocates
        self.pinned = 0  # graph outputs: never freed (inputs are, after their last reader)
        for v in graph.inputs:
            if not static(v):
                self._new(v, size(None, v), pinned=False)
        outputs = self.outputs = {id(v) for v in graph.outputs}
        for i, n in enumerate(self.nodes):
            dynamic = [v for v in n.inputs if v is not None and id(v) in self.buffer_of]
            t = traits(n)
            for j, v in enumerate(n.outputs):
                if j == 0 and dynamic and (t.view or (in_place and t.elementwise
                                                      and self._same_size(dynamic[0], v, n, size))):
                    self.buffer_of[id(v)] = self.buffer_of[id(dynamic[0])]
                    continue
                b = self._new(v, size(n, v), pinned=id(v) in outputs)
                self.makes[i].append(b)
            for v in n.outputs:
                if id(v) in outputs:
                    self.pinned |= 1 << self.buffer_of[id(v)]
        self.read_list = [sorted({self.buffer_of[id(v)] for v in n.inputs if v is not None and id(v) in self.buffer_of})
                          for n in self.nodes]
        for i, bs in enumerate(self.read_list):
            for b in bs:
                self.users[b] |= 1 << i
        self.make_bytes = [sum(self.size[b] for b in bs) for bs in self.makes]
        self.preds = [0] * len(self.nodes)
        self.succs: list[list[int]] = [[] for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            for u in n.inputs:
                p = u.producer if u is not None else None
                if p is not None and id(p) in self.index and not (self.preds[i] >> self.index[id(p)]) & 1:
                    self.preds[i] |= 1 << self.index[id(p)]
                    self.succs[self.index[id(p)]].append(i)
        self.initial = 0
        for v in graph.inputs:
            if id(v) in self.buffer_of:
                self.initial |= 1 << self.buffer_of[id(v)]

    def _same_size(self, a: Value, b: Value, n: Node, size: SizeFn) -> bool:
        producer = a.producer
        return size(producer, a) == size(n, b) and len(a.uses) == 1 and id(a) not in self.outputs

    def _new(self, v: Value, nbytes: int, pinned: bool) -> int:
        b = len(self.size)
        self.buffer_of[id(v)] = b
        self.size.append(nbytes)
        self.users.append(0)
        if pinned:
            self.pinned |= 1 << b
        return b

    def step(self, done: int, live: int, live_bytes: int, i: int) -> tuple[int, int, int]:
        """Run node i: (bytes in use while it runs, live buffers after, their bytes)."""
        during = live_bytes + self.make_bytes[i]
        for b in self.makes[i]:
            live |= 1 << b
        live_bytes = during
        done |= 1 << i
        for b in self.read_list[i]:
            if (live >> b) & 1 and not (self.pinned >> b) & 1 and self.users[b] & ~done == 0:
                live &= ~(1 << b)
                live_bytes -= self.size[b]
        return during, live, live_bytes

    def bytes(self, live: int) -> int:
        return sum(self.size[b] for b in range(len(self.size)) if (live >> b) & 1)


def peak_memory(graph: Graph, size: SizeFn, order: list[Node] | None = None, in_place: bool = True) -> int:
    """Peak bytes of live activations when the graph runs in `order` (its own by default)."""
    bufs = _Buffers(graph, size, in_place)
    return _peak(bufs, [bufs.index[id(n)] for n in (order or bufs.nodes) if id(n) in bufs.index])


def _peak(bufs: _Buffers, order: list[int]) -> int:
    done, live = 0, bufs.initial
    live_bytes = peak = bufs.bytes(live)
    for i in order:
        during, live, live_bytes = bufs.step(done, live, live_bytes, i)
        peak = max(peak, during)
        done |= 1 << i
    return peak


def best_order(graph: Graph, size: SizeFn, in_place: bool = True, beam: int = 2000) -> Schedule:
    """The execution order with the lowest peak activation memory (see the module doc)."""
    bufs = _Buffers(graph, size, in_place)
    n = len(bufs.nodes)
    given = _peak(bufs, list(range(n)))
    succs = bufs.succs
    # state: done-mask -> (peak so far, live mask, live bytes, ready nodes, order as a tuple of indices)
    start = bufs.bytes(bufs.initial)
    ready0 = tuple(i for i in range(n) if bufs.preds[i] == 0)
    states: dict[int, tuple] = {0: (start, bufs.initial, start, ready0, ())}
    exact = True
    for _ in range(n):
        nxt: dict[int, tuple] = {}
        for done, (peak, live, live_bytes, ready, order) in states.items():
            for i in ready:
                during, after, after_bytes = bufs.step(done, live, live_bytes, i)
                p = max(peak, during)
                key = done | (1 << i)
                old = nxt.get(key)
                if old is None or p < old[0]:
                    new_ready = tuple(j for j in ready if j != i) + tuple(
                        s for s in succs[i] if bufs.preds[s] & ~key == 0)
                    nxt[key] = (p, after, after_bytes, new_ready, (*order, i))
        if len(nxt) > beam:
            exact = False
            nxt = dict(sorted(nxt.items(), key=lambda kv: (kv[1][0], kv[1][2]))[:beam])
        states = nxt
    peak, _, _, _, order = min(states.values(), key=lambda s: s[0])
    if peak > given:  # a beam can lose the given order; never report worse than it
        return Schedule(list(bufs.nodes), given, False, given)
    return Schedule([bufs.nodes[i] for i in order], peak, exact, given)
