"""The IR verifier: structure (each value defined once, every input defined, order
topological, no cycle, use-def links right) and types (declared types agree with the
registry's inference). Messages name the node and op."""

from __future__ import annotations

from hwnas.errors import HwnasError
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import InferenceError, infer_types
from hwnas.ir.types import TensorType


class VerificationError(HwnasError):
    """The graph breaks the IR's invariants; `problems` lists every one found, the message
    shows the first."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


def _where(n: Node) -> str:
    return f"node '{n.name}' ({n.qualified_op})"


def verify(graph: Graph, *, check_types: bool = True) -> None:
    """Raise VerificationError when the graph is malformed; types are checked only once the
    structure is sound."""
    problems = structure_problems(graph)
    if not problems and check_types:
        problems = type_problems(graph)
    if problems:
        raise VerificationError(problems)


def structure_problems(graph: Graph) -> list[str]:
    """Everything wrong with the graph's structure (definitions, order, use lists), as messages."""
    problems: list[str] = []
    defined: dict[int, str] = {}
    names: dict[str, str] = {}

    def define(v: Value, by: str) -> None:
        if id(v) in defined:
            problems.append(f"value '{v.name}' is defined twice ({defined[id(v)]} and {by})")
        elif v.name in names:
            problems.append(f"name '{v.name}' is used by two values ({names[v.name]} and {by})")
        defined[id(v)] = by
        names[v.name] = by

    for v in graph.inputs:
        define(v, "a graph input")
    for key, v in graph.constants.items():
        if v.const is None or key != v.name:
            problems.append(f"constant '{key}' has no value or a different name")
        define(v, "a constant")
    position: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        position[id(n)] = i
        if n.graph is not graph:
            problems.append(f"{_where(n)} does not belong to this graph")
        for k, v in enumerate(n.outputs):
            if v.producer is not n or v.index != k:
                problems.append(f"{_where(n)}: output {k} '{v.name}' names another producer")
            define(v, _where(n))
    node_ids = {id(n) for n in graph.nodes}
    late: list[tuple[Node, Value]] = []
    for i, n in enumerate(graph.nodes):
        for k, x in enumerate(n.inputs):
            if x is None:
                continue
            if id(x) not in defined:
                problems.append(f"{_where(n)}: input {k} '{x.name}' is not defined in the graph")
            elif x.producer is not None and id(x.producer) in node_ids and position[id(x.producer)] >= i:
                late.append((n, x))
            if (n, k) not in x._uses:
                problems.append(f"{_where(n)}: input {k} '{x.name}' is missing from its use list")
    for v in graph.values():
        for u, k in v._uses:
            if id(u) not in node_ids or u.input(k) is not v:
                problems.append(f"value '{v.name}' lists a stale use by node '{u.name}'")
    for v in graph.outputs:
        if id(v) not in defined:
            problems.append(f"graph output '{v.name}' is not defined in the graph")
    if late:
        cycle = _cycle(graph)
        if cycle:
            problems.append("graph has a cycle: " + " -> ".join(cycle))
        else:
            n, v = late[0]
            problems.append(f"{_where(n)} reads '{v.name}' before it is computed (order is not topological)")
    return problems


def _cycle(graph: Graph) -> list[str]:
    import networkx as nx

    try:
        edges = nx.find_cycle(graph.nx())
    except nx.NetworkXNoCycle:
        return []
    return [f"'{e[0].name}'" for e in edges] + [f"'{edges[0][0].name}'"]


def type_problems(graph: Graph) -> list[str]:
    """Declared output types that disagree with what the registry infers from the inputs."""
    problems = []
    for n in graph.nodes:
        try:
            inferred = infer_types(n)
        except InferenceError as e:
            problems.append(str(e))
            continue
        for v, t in zip(n.outputs, inferred, strict=False):
            if v.type is not None and t is not None and not compatible(v.type, t):
                problems.append(f"{_where(n)}: output '{v.name}' is declared {v.type} but its inputs give {t}")
    return problems


def compatible(a: TensorType, b: TensorType) -> bool:
    """Equal where both are known (an unknown dim or rank agrees with anything)."""
    if a.dtype != b.dtype and a.dtype.value and b.dtype.value:
        return False
    if a.shape is None or b.shape is None:
        return True
    if len(a.shape) != len(b.shape):
        return False
    pairs = zip(a.shape, b.shape, strict=True)
    return all(x == y or not isinstance(x, int) or not isinstance(y, int) for x, y in pairs)
