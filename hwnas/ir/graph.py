"""Value, Node and Graph: the IR every frontend, pass, cost model and emitter shares.

Use-def links are kept by the mutators here (`Node.set_input`, `Value.replace_all_uses_with`,
`Graph.add_node`, `Graph.remove_node`); code outside this module never edits `_uses`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from hwnas.ir.annotations import FusedActivation, FusedInto, Placement, QuantSpec, SparsitySpec
from hwnas.ir.attributes import Attr
from hwnas.ir.types import Dim, TensorType

if TYPE_CHECKING:
    import networkx as nx


class IRError(ValueError):
    """A malformed graph or a misuse of the IR API."""


class Value:
    """A tensor: produced by one node, or a graph input, or a constant."""

    __slots__ = ("name", "type", "producer", "index", "_uses", "const")

    def __init__(self, name: str, type: TensorType | None = None, const: np.ndarray | None = None):
        self.name = name
        self.type = TensorType.of_array(const) if const is not None and type is None else type
        self.producer: Node | None = None
        self.index = 0
        self._uses: list[tuple[Node, int]] = []
        self.const = const

    @property
    def uses(self) -> list[tuple[Node, int]]:
        """(node, input index) pairs that read this value; a copy, safe to mutate."""
        return list(self._uses)

    @property
    def users(self) -> list[Node]:
        """The distinct nodes that read this value, in first-use order."""
        seen: dict[int, Node] = {}
        for n, _ in self._uses:
            seen.setdefault(id(n), n)
        return list(seen.values())

    @property
    def is_constant(self) -> bool:
        """True when the value holds its array (a graph constant)."""
        return self.const is not None

    @property
    def shape(self) -> tuple[Dim, ...] | None:
        """The value's shape, or None when its type or rank is unknown."""
        return None if self.type is None else self.type.shape

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known integer, else None."""
        return None if self.type is None else self.type.static_shape

    def replace_all_uses_with(self, other: Value) -> None:
        """Make every node that reads this value read `other` (graph outputs are not touched:
        see `Graph.replace_value`)."""
        for node, i in list(self._uses):
            node.set_input(i, other)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(slots=True)
class Annotations:
    """The typed slots that passes fill in; None means not annotated."""

    fused_activation: FusedActivation | None = None
    fused_into: FusedInto | None = None
    quant: QuantSpec | None = None
    sparsity: SparsitySpec | None = None
    placement: Placement | None = None

    def items(self) -> Iterator[tuple[str, object]]:
        """(slot name, annotation) for each slot that is set, in declaration order."""
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                yield f.name, v


class Node:
    """One operation. `op` and `domain` follow ONNX; hwnas's own ops use `hwnas`."""

    __slots__ = ("name", "op", "domain", "_inputs", "outputs", "attrs", "ann", "graph")

    def __init__(
        self,
        op: str,
        inputs: Sequence[Value | None],
        outputs: Sequence[Value],
        attrs: dict[str, Attr] | None = None,
        name: str = "",
        domain: str = "",
    ):
        self.name = name
        self.op = op
        self.domain = domain
        self._inputs: list[Value | None] = []
        self.outputs: list[Value] = list(outputs)
        self.attrs: dict[str, Attr] = dict(attrs or {})
        self.ann = Annotations()
        self.graph: Graph | None = None
        for i, v in enumerate(inputs):
            self._inputs.append(v)
            if v is not None:
                v._uses.append((self, i))
        for i, v in enumerate(self.outputs):
            if v.producer is not None:
                raise IRError(f"value '{v.name}' already has a producer ({v.producer.name})")
            v.producer, v.index = self, i

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        """The inputs in order, None where an optional one is absent; edit with `set_input`."""
        return tuple(self._inputs)

    def input(self, i: int) -> Value | None:
        """Input i, or None when it is absent (optional and not given)."""
        return self._inputs[i] if i < len(self._inputs) else None

    def set_input(self, i: int, value: Value | None) -> None:
        """Rewire input `i`, keeping both values' use lists right."""
        old = self._inputs[i]
        if old is not None:
            old._uses.remove((self, i))
        self._inputs[i] = value
        if value is not None:
            value._uses.append((self, i))

    def set_inputs(self, values: Sequence[Value | None]) -> None:
        """Replace all inputs at once (the count may change), keeping use lists right."""
        self._detach_inputs()
        for i, v in enumerate(values):
            self._inputs.append(v)
            if v is not None:
                v._uses.append((self, i))

    def _detach_inputs(self) -> None:
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._uses.remove((self, i))
        self._inputs = []

    def attr(self, name: str, default: object = None) -> object:
        """The attribute's value, or `default` when the node does not have it."""
        a = self.attrs.get(name)
        return default if a is None else a.value

    def attr_int(self, name: str, default: int) -> int:
        """An integer attribute (`group`, `axis`, ...), or `default`."""
        a = self.attrs.get(name)
        return default if a is None else int(a.value)

    def attr_float(self, name: str, default: float) -> float:
        """A float attribute (`epsilon`, `alpha`, ...), or `default`."""
        a = self.attrs.get(name)
        return default if a is None else float(a.value)

    def attr_ints(self, name: str, default: Sequence[int] = ()) -> list[int]:
        """An integer-list attribute (`kernel_shape`, `pads`, `perm`, ...), or `default`."""
        a = self.attrs.get(name)
        return list(default) if a is None else [int(x) for x in a.value]

    def attr_str(self, name: str, default: str) -> str:
        """A string attribute (`mode`, `auto_pad`, ...), or `default`."""
        v = self.attr(name)
        return default if v is None else (v.decode() if isinstance(v, bytes) else str(v))

    def operand(self, i: int) -> Value:
        """Input `i`, which the op requires; IRError when it is absent."""
        v = self.input(i)
        if v is None:
            raise IRError(f"node '{self.name}' ({self.op}): input {i} is missing")
        return v

    @property
    def qualified_op(self) -> str:
        """`domain::op`, or just `op` for the default ONNX domain."""
        return f"{self.domain}::{self.op}" if self.domain else self.op

    def __repr__(self) -> str:
        ins = ", ".join("_" if v is None else f"%{v.name}" for v in self._inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        return f"{outs} = {self.qualified_op}({ins})  # {self.name}"


class Graph:
    """A dataflow graph: inputs, constants, nodes in topological order, outputs."""

    def __init__(self, name: str = "main", opset: dict[str, int] | None = None):
        self.name = name
        self.opset: dict[str, int] = dict(opset or {"": 17})
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.constants: dict[str, Value] = {}
        self._nodes: list[Node] = []
        self._removed = False
        self.doc = ""
        self._names: set[str] = set()
        self._counter = itertools.count()
        # `registry.refresh_types`'s record of what each node's inference read, and the opset
        # it ran under: nodes that read nothing new are not inferred again.
        self._type_memo: dict[int, tuple[object, ...]] = {}
        self._type_memo_opset: tuple[tuple[str, int], ...] = ()

    @property
    def nodes(self) -> list[Node]:
        """Nodes in topological order. Removal only detaches a node; the list drops
        detached nodes here, once, so removing k nodes costs O(n), not O(n·k)."""
        if self._removed:
            self._nodes = [n for n in self._nodes if n.graph is self]
            self._removed = False
        return self._nodes

    @nodes.setter
    def nodes(self, nodes: list[Node]) -> None:
        """Replace the node list (the caller keeps it topological and the nodes' `graph` set)."""
        self._nodes = list(nodes)
        self._removed = False

    # -- names ---------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """A value or node name not used yet in this graph, derived from `base`."""
        if base and base not in self._names:
            self._names.add(base)
            return base
        while True:
            cand = f"{base or 'v'}_{next(self._counter)}"
            if cand not in self._names:
                self._names.add(cand)
                return cand

    def _claim(self, name: str) -> None:
        self._names.add(name)

    # -- building ------------------------------------------------------------------
    def add_input(self, name: str, type: TensorType | None) -> Value:
        """Append a graph input (renamed if `name` is taken)."""
        v = Value(self.unique_name(name), type)
        self.inputs.append(v)
        return v

    def add_constant(self, array: np.ndarray, name: str = "const") -> Value:
        """Add a constant holding `array` (its type taken from the array), renamed if taken."""
        v = Value(self.unique_name(name), const=np.asarray(array))
        self.constants[v.name] = v
        return v

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value | None],
        n_outputs: int = 1,
        attrs: dict[str, Attr] | None = None,
        name: str = "",
        domain: str = "",
        output_names: Sequence[str] | None = None,
        output_types: Sequence[TensorType | None] | None = None,
        before: Node | None = None,
        after: Node | None = None,
    ) -> Node:
        """Create a node and place it (at the end, or next to `before`/`after`)."""
        names = output_names or [f"{name or op.lower()}_out{i}" if n_outputs > 1 else (name or op.lower())
                                 for i in range(n_outputs)]
        types = output_types or [None] * len(names)
        outs = [Value(self.unique_name(n), t) for n, t in zip(names, types, strict=True)]
        node = Node(op, inputs, outs, attrs, self.unique_name(name or op), domain)
        self.insert_node(node, before=before, after=after)
        return node

    def insert_node(self, node: Node, before: Node | None = None, after: Node | None = None) -> None:
        """Place a node built outside the graph (at the end, or next to `before`/`after`)
        and reserve its names; the caller keeps the order topological."""
        node.graph = self
        self._claim(node.name)
        for v in node.outputs:
            self._claim(v.name)
        if before is not None:
            self.nodes.insert(self._index(before), node)
        elif after is not None:
            self.nodes.insert(self._index(after) + 1, node)
        else:
            self.nodes.append(node)

    def _index(self, node: Node) -> int:
        for i, n in enumerate(self.nodes):
            if n is node:
                return i
        raise IRError(f"node '{node.name}' is not in graph '{self.name}'")

    # -- removing ------------------------------------------------------------------
    def remove_node(self, node: Node) -> None:
        """Remove one node whose outputs nobody reads (see `remove_nodes`)."""
        self.remove_nodes([node])

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """Remove nodes whose outputs nobody outside the set reads."""
        doomed_nodes = list(nodes)
        doomed = {id(n) for n in doomed_nodes}
        if not doomed:
            return
        out_ids = {id(v) for v in self.outputs}
        for n in doomed_nodes:
            if n.graph is not self:
                raise IRError(f"node '{n.name}' is not in graph '{self.name}'")
            for v in n.outputs:
                if id(v) in out_ids:
                    raise IRError(f"cannot remove node '{n.name}': '{v.name}' is a graph output")
                user = next((u for u, _ in v._uses if id(u) not in doomed), None)
                if user is not None:
                    raise IRError(f"cannot remove node '{n.name}': '{v.name}' is read by '{user.name}'")
        for n in doomed_nodes:
            n._detach_inputs()
            n.graph = None
        self._removed = True

    def replace_value(self, old: Value, new: Value) -> str | None:
        """Make every reader of `old` read `new`. A graph output keeps its name: `new` takes
        it over when `new` is a node output that is not itself a graph output. Returns the
        reason it cannot be done, or None when done."""
        out_pos = [i for i, v in enumerate(self.outputs) if v is old]
        if out_pos:
            if new.producer is None or self.is_output(new):
                return f"'{old.name}' is a graph output and '{new.name}' cannot take its name"
            self._names.discard(new.name)
            new.name, old.name = old.name, self.unique_name(old.name + "_replaced")
            for i in out_pos:
                self.outputs[i] = new
        old.replace_all_uses_with(new)
        return None

    def drop_if_unused(self, *values: Value | None) -> None:
        """Remove these constants when nothing reads them any more (cheaper than a sweep)."""
        for v in values:
            if v is not None and v.const is not None and not v._uses and self.constants.get(v.name) is v \
                    and not self.is_output(v):
                del self.constants[v.name]

    def remove_unused_constants(self) -> int:
        """Drop constants that no node reads and that are not graph outputs; returns how many."""
        out_ids = {id(v) for v in self.outputs}
        dead = [k for k, v in self.constants.items() if not v._uses and id(v) not in out_ids]
        for k in dead:
            del self.constants[k]
        return len(dead)

    # -- queries -------------------------------------------------------------------
    def is_output(self, v: Value) -> bool:
        """True when `v` is one of the graph's outputs. Values define no `__eq__`, so `in`
        compares them by identity, as `is` does, without a Python-level loop."""
        return v in self.outputs

    def values(self) -> Iterator[Value]:
        """Every value: inputs, constants, then node outputs in order."""
        yield from self.inputs
        yield from self.constants.values()
        for n in self.nodes:
            yield from n.outputs

    def node_by_name(self, name: str) -> Node:
        """The node called `name`; KeyError when there is none."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def value_by_name(self, name: str) -> Value:
        """The value called `name` (input, constant or node output); KeyError when there is none."""
        for v in self.values():
            if v.name == name:
                return v
        raise KeyError(name)

    def nx(self) -> nx.MultiDiGraph:
        """A networkx view: one vertex per node (the Node object), an edge per value use."""
        import networkx as nx

        g = nx.MultiDiGraph()
        g.add_nodes_from(self.nodes)
        for n in self.nodes:
            for i, v in enumerate(n._inputs):
                if v is not None and v.producer is not None and v.producer.graph is self:
                    g.add_edge(v.producer, n, value=v.name, index=i)
        return g

    def toposort(self) -> None:
        """Reorder nodes topologically, keeping the current order where it is free."""
        import networkx as nx

        position = {id(n): i for i, n in enumerate(self.nodes)}
        try:
            order = list(nx.lexicographical_topological_sort(self.nx(), key=lambda n: position[id(n)]))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(self.nx())
            raise IRError("graph has a cycle through " + " -> ".join(e[0].name for e in cycle)) from None
        self.nodes = order

    # -- copying -------------------------------------------------------------------
    def copy(self) -> Graph:
        """An independent copy: new values and nodes with the same names, types, attributes
        and annotations, and copies of the constants' arrays. Iterative, so graphs of any
        depth copy (`copy.deepcopy` of a long chain of nodes would exceed Python's recursion
        limit; it calls this)."""
        import copy as _copy

        g = Graph(self.name, self.opset)
        g.doc = self.doc
        g._names = set(self._names)
        g._counter = _copy.copy(self._counter)
        vmap: dict[int, Value] = {}

        def twin(v: Value) -> Value:
            new = Value(v.name, v.type, None if v.const is None else v.const.copy())
            vmap[id(v)] = new
            return new

        g.inputs = [twin(v) for v in self.inputs]
        g.constants = {k: twin(v) for k, v in self.constants.items()}
        for n in self.nodes:
            ins = [None if v is None else vmap.get(id(v)) or twin(v) for v in n._inputs]
            node = Node(n.op, ins, [twin(v) for v in n.outputs], dict(n.attrs), n.name, n.domain)
            for key, ann in n.ann.items():
                setattr(node.ann, key, ann)  # annotations are frozen dataclasses: shared safely
            node.graph = g
            g._nodes.append(node)
        g.outputs = [vmap.get(id(v)) or twin(v) for v in self.outputs]
        return g

    def __deepcopy__(self, memo: dict[int, object]) -> Graph:
        return self.copy()

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.nodes)} nodes, {len(self.constants)} constants>"
