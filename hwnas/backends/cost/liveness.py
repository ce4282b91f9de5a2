"""Peak activation memory over an execution order, and a search for an order that lowers it.

Buffers: each run-time value produced by a node (and each graph input) is one buffer, live
from its producer until its last consumer has run; graph outputs stay live to the end, and
an output nobody reads dies with the step that made it. Views (Reshape, Flatten...) alias
their input's buffer. An element-wise op writes in place, into its first input's buffer,
when that buffer has the same size and no reader other than the op. Values known at
compile time (weights) are not activations. A buffer's size is what the caller's `SizeFn`
says: the MCU model gives each tensor's stored size (`mcu.tensor_storage`).

While step i runs, the buffers live are those with `first <= i <= last` (`Buffer`): its
inputs and its outputs together. The peak is the largest such sum, so a memory plan that
gives every `Schedule.buffers` entry an offset over `Schedule.order` needs at least
`Schedule.peak_bytes`, and an interval packing that reaches it needs no more.

After running a set S of nodes, the live buffers depend on S only, so the best order is a
shortest-path problem over such sets (Serenity, Ahn et al., MLSys 2020): a breadth-first
dynamic program keeps, per set, the lowest peak that reaches it. Wide graphs cap the
number of sets kept per step (a beam), which makes the result a heuristic there; the
report says which. Where every order has run the same set (a cut: one node every other
node precedes or follows, such as a cell's output), the states collapse to one, and the
beam ranks the states after it by their peak since the cut (the peak before is the same
for all), so one wide early layer does not blind the search of later segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from hwnas.backends.cost.base import is_compile_time
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import static_values, traits

SizeFn = Callable[[Node | None, Value], int]
"""Bytes of the buffer that holds `value`, made by `producer` (None for a graph input)."""


@dataclass(frozen=True)
class Buffer:
    """One activation buffer of a schedule: the values stored in it (its maker's output
    first, then the views of it and the in-place outputs written over it), its size, and
    the steps of `Schedule.order` during which it is live, both ends included."""

    values: tuple[Value, ...]
    nbytes: int
    first: int
    """The step that makes it (its position in the order); -1 for a graph input, live
    from the start."""
    last: int
    """The step of its last reader; the last step for a graph output (and for a graph
    input nobody reads); `first` for an output nobody reads."""

    def live_at(self, step: int) -> bool:
        """True when the buffer holds data the program needs while `step` runs."""
        return self.first <= step <= self.last


@dataclass(frozen=True)
class Schedule:
    """An execution order, the activation buffers it allocates and the peak memory it
    needs: `peak_bytes` is the largest sum of `nbytes` over the buffers live at one step
    (`live_bytes`)."""

    order: list[Node]
    peak_bytes: int
    exact: bool
    """True when the dynamic program explored every reachable set (the order is optimal
    under this buffer model)."""
    given_peak_bytes: int
    """Peak of the graph's own order, for comparison."""
    buffers: tuple[Buffer, ...] = field(default=())
    """Every buffer with its lifetime over `order`, graph inputs first, then in the order
    their makers run."""

    def buffer_of(self, value: Value) -> Buffer:
        """The buffer that holds run-time `value`; KeyError for a value known at compile time."""
        try:
            return self._by_value[id(value)]
        except KeyError:
            raise KeyError(value.name) from None

    @cached_property
    def _by_value(self) -> dict[int, Buffer]:
        return {id(v): b for b in self.buffers for v in b.values}

    def live_bytes(self, step: int) -> int:
        """Bytes of the buffers live while `step` runs (its inputs, its outputs, and what
        later steps still read)."""
        return sum(b.nbytes for b in self.buffers if b.live_at(step))


class _Buffers:
    def __init__(self, graph: Graph, size: SizeFn, in_place: bool) -> None:
        static = static_values(graph)
        self.nodes = [n for n in graph.nodes if not is_compile_time(n, static)]
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.buffer_of: dict[int, int] = {}  # id(value) -> buffer id
        self.values: list[list[Value]] = []  # the values each buffer holds, its maker's first
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
                                                      and self._overwritable(dynamic[0], v, n, size))):
                    b = self.buffer_of[id(dynamic[0])]
                    self.buffer_of[id(v)] = b
                    self.values[b].append(v)
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

    def _overwritable(self, a: Value, out: Value, n: Node, size: SizeFn) -> bool:
        """N may write OUT over A's buffer: the same size, none of the values held in it a
        graph output, and every reader of them N or a node that must run before N (a view
        of A read by a node N does not depend on must keep its data)."""
        b = self.buffer_of[id(a)]
        if self.size[b] != size(n, out) or any(id(v) in self.outputs for v in self.values[b]):
            return False
        others = {id(u): u for v in self.values[b] for u in v.users if u is not n}
        return not others or set(others) <= _ancestors(n)

    def _new(self, v: Value, nbytes: int, pinned: bool) -> int:
        b = len(self.size)
        self.buffer_of[id(v)] = b
        self.values.append([v])
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
        for b in (*self.read_list[i], *self.makes[i]):
            if (live >> b) & 1 and not (self.pinned >> b) & 1 and self.users[b] & ~done == 0:
                live &= ~(1 << b)
                live_bytes -= self.size[b]
        return during, live, live_bytes

    def lifetimes(self, order: list[int]) -> tuple[Buffer, ...]:
        """Every buffer with the steps of ORDER (node indices) during which it is live."""
        at = {i: step for step, i in enumerate(order)}
        end = len(order) - 1
        first = [-1] * len(self.size)
        for i, bs in enumerate(self.makes):
            for b in bs:
                first[b] = at[i]
        out = []
        for b, nbytes in enumerate(self.size):
            readers = [at[i] for i in range(len(self.nodes)) if (self.users[b] >> i) & 1]
            if (self.pinned >> b) & 1 or (first[b] < 0 and not readers):
                last = end
            else:
                last = max(readers, default=first[b])
            out.append(Buffer(tuple(self.values[b]), nbytes, first[b], last))
        return tuple(sorted(out, key=lambda buf: buf.first))

    def bytes(self, live: int) -> int:
        return sum(self.size[b] for b in range(len(self.size)) if (live >> b) & 1)


def _ancestors(node: Node) -> set[int]:
    """ids of the nodes NODE depends on, directly or not."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        for v in stack.pop().inputs:
            p = v.producer if v is not None else None
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    return seen


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
    # state: done-mask -> (peak so far, peak since the last cut, live mask, live bytes, ready nodes, order)
    states: dict[int, tuple] = {0: (start, start, bufs.initial, start, ready0, ())}
    exact = True
    for _ in range(n):
        nxt: dict[int, tuple] = {}
        cut = len(states) == 1  # every order so far ran the same set: later steps cannot change the peak before
        for done, (peak, local, live, live_bytes, ready, order) in states.items():
            if cut:
                local = live_bytes
            for i in ready:
                during, after, after_bytes = bufs.step(done, live, live_bytes, i)
                p, q = max(peak, during), max(local, during)
                key = done | (1 << i)
                old = nxt.get(key)
                if old is None or p < old[0]:
                    new_ready = tuple(j for j in ready if j != i) + tuple(
                        s for s in succs[i] if bufs.preds[s] & ~key == 0)
                    nxt[key] = (p, q, after, after_bytes, new_ready, (*order, i))
        if len(nxt) > beam:
            # Ranked by the peak since the last cut: the peak before it is the same for every state.
            exact = False
            nxt = dict(sorted(nxt.items(), key=lambda kv: (kv[1][1], kv[1][3]))[:beam])
        states = nxt
    peak, _, _, _, _, order = min(states.values(), key=lambda s: s[0])
    if peak > given:  # a beam can lose the given order; never report worse than it
        order, peak, exact = tuple(range(n)), given, False
    return Schedule([bufs.nodes[i] for i in order], peak, exact, given, bufs.lifetimes(list(order)))
