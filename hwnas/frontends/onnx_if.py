"""`If` nodes whose condition the input dims decide, replaced by the branch those dims select.

Exporters write `If` where a model's code branches on a tensor's size (Silero VAD's decoder
checks the state's batch dim and its output's length). Once the input dims are known, such a
condition is a constant, and the model is its chosen branch inlined: hwnas then reads,
prices and compiles it like any other graph, specialized for those dims (a warning names the
branch and the dims). A condition that depends on an input's values (a sample-rate input, a
flag) is decided only at run time, and the model is refused with the input named.

Which it is, is decided twice: statically (the condition's producers reach no graph input
except through `Shape` or `Size`) and by onnxruntime evaluating the conditions on two
different random inputs of the given dims, which must agree.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper

from hwnas.errors import ModelLoadError, UnsupportedModelError, first_line

SHAPE_ONLY = frozenset({"Shape", "Size"})
"""Ops whose output depends on their input's dims, not its values."""
ROUNDS = 8
"""Inlining rounds at most: a branch may hold further `If`s, inlined in the next round."""


def has_if(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "If" for n in model.graph.node)


def inline_static_ifs(model: onnx.ModelProto, dims: Mapping[str, int | tuple[int, ...]] | None,
                      source: str) -> onnx.ModelProto:
    """A copy of `model` with every top-level `If` replaced by the branch that `dims` select
    (input dims by name, or an input's whole shape by its name; others are taken as 1, as
    `hwnas cost` takes them). A constant condition needs no dims. UnsupportedModelError, naming
    the node and why, when a condition depends on input values, or on input dims while `dims`
    is None (a caller that cannot say which dims the graph will run at: a graph specialized for
    1s would pass for a dynamic one)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    chosen: list[str] = []
    defaulted: set[str] = set()
    by_dims = False  # whether any condition read the input dims (else every one was a constant)
    for _ in range(ROUNDS):
        ifs = [n for n in out.graph.node if n.op_type == "If"]
        if not ifs:
            break
        made = _producers(out.graph)
        inputs = {i.name for i in out.graph.input} - {t.name for t in out.graph.initializer}
        reads = [_check_static(n, made, inputs, source) for n in ifs]
        if dims is None and any(reads):
            first = ifs[reads.index(True)]
            raise UnsupportedModelError(
                f"{source}: node '{_name(first)}' (If): hwnas inlines the branch the input dims select, when they "
                "are given (--dims on cost, inspect, dump, measure and compile; import_onnx(model, dims=...))")
        by_dims = by_dims or any(reads)
        feeds, defaulted_now = _feeds(out.graph, dims or {}, source)
        defaulted |= defaulted_now if any(reads) else set()
        conds = _evaluate(out, [n.input[0] for n in ifs], feeds, source)
        choice = {id(n): bool(c) for n, c in zip(ifs, conds, strict=True)}
        _inline(out.graph, choice)
        chosen += [f"'{_name(n)}' ({'then' if choice[id(n)] else 'else'} branch)" for n in ifs]
    else:
        if has_if(out):
            raise UnsupportedModelError(f"{source}: If nodes nested more than {ROUNDS} deep are not supported")
    if by_dims:  # a constant condition's branch is the model itself: nothing to say
        given = ", ".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, tuple) else v}"
                          for k, v in (dims or {}).items())
        note = f" (taken as 1: {', '.join(sorted(defaulted))})" if defaulted else ""
        warnings.warn(f"{source}: If nodes inlined as the input dims {given or 'not given'}{note} select: "
                      f"{', '.join(chosen)}; the graph holds for these dims only", stacklevel=2)
    return out


def _name(n: onnx.NodeProto) -> str:
    """A node's name, or its first output's where it has none."""
    return n.name or next((o for o in n.output if o), "?")


def _producers(g: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in g.node for o in n.output if o}


def _made(g: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph defines: its nodes' outputs, initializers and inputs."""
    return {o for n in g.node for o in n.output} | {t.name for t in g.initializer} | {i.name for i in g.input}


def outer_names(g: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from an enclosing scope: read, and not made inside."""
    made = _made(g)
    read: set[str] = set()
    for n in g.node:
        read.update(i for i in n.input if i)
        for sub in _subgraphs(n):
            read |= outer_names(sub)
    return read - made


def _subgraphs(n: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _check_static(node: onnx.NodeProto, made: Mapping[str, onnx.NodeProto], inputs: set[str],
                  source: str) -> bool:
    """Whether the If's condition reads input dims (through Shape or Size; False: a constant),
    given the graph's producers by output name (`made`) and its run-time `inputs`.
    ModelLoadError for a malformed If; UnsupportedModelError when its condition reads a graph
    input's values."""
    branches = {a.name for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
    if len(node.input) != 1 or not node.input[0] or branches != {"then_branch", "else_branch"}:
        raise ModelLoadError(f"{source}: node '{_name(node)}' (If): "
                             "needs one condition input and a then_branch and an else_branch graph")
    stack, seen, reads_dims = [node.input[0]], set(), False
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            raise UnsupportedModelError(
                f"{source}: node '{_name(node)}' (If): its condition depends on the values of "
                f"input '{name}', known only at run time; hwnas inlines an If only where the input dims decide it")
        p = made.get(name)
        if p is not None and p.op_type in SHAPE_ONLY:
            reads_dims = True
            continue
        if p is None:
            continue
        stack.extend(i for i in p.input if i)
        for sub in _subgraphs(p):
            stack.extend(outer_names(sub))
    return reads_dims


def _feeds(g: onnx.GraphProto, dims: Mapping[str, int | tuple[int, ...]],
           source: str) -> tuple[list[tuple[str, tuple[int, ...], np.dtype]], set[str]]:
    """Each graph input's name, shape under `dims` (1 for a dim not given) and numpy dtype."""
    inits = {t.name for t in g.initializer}
    feeds, defaulted = [], set()
    for vi in g.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") != "tensor_type" or not tt.HasField("shape"):
            raise UnsupportedModelError(f"{source}: input '{vi.name}' has no tensor shape; hwnas cannot choose "
                                        "the If branches its dims decide")
        whole = dims.get(vi.name)
        shape = []
        for i, d in enumerate(tt.shape.dim):
            if isinstance(whole, tuple):
                shape.append(whole[i] if i < len(whole) else 1)
            elif d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif isinstance(size := dims.get(d.dim_param) if d.dim_param else None, int):
                shape.append(size)
            else:
                shape.append(1)
                defaulted.add(d.dim_param or f"{vi.name}[dim {i}]")
        feeds.append((vi.name, tuple(shape), helper.tensor_dtype_to_np_dtype(tt.elem_type)))
    return feeds, defaulted


def _evaluate(model: onnx.ModelProto, conds: list[str], feeds: list[tuple[str, tuple[int, ...], np.dtype]],
              source: str) -> list[bool]:
    """The conditions' values, from onnxruntime on two different random inputs (which must agree)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(c, onnx.TensorProto.BOOL, None)
                              for c in dict.fromkeys(conds))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        runs = []
        for seed in (0, 1):
            rng = np.random.default_rng(seed)
            feed = {name: (rng.standard_normal(shape) if np.issubdtype(dtype, np.floating)
                           else np.full(shape, seed + 1)).astype(dtype) for name, shape, dtype in feeds}
            values = dict(zip(dict.fromkeys(conds), session.run(None, feed), strict=True))
            runs.append([bool(np.asarray(values[c]).reshape(-1)[0]) for c in conds])
    except Exception as e:  # onnxruntime raises its own exception types
        raise UnsupportedModelError(f"{source}: cannot evaluate the If conditions for these dims "
                                    f"({first_line(e)})") from None
    if runs[0] != runs[1]:
        raise UnsupportedModelError(f"{source}: an If condition changes with the input values, not only their dims; "
                                    "hwnas cannot choose its branch")
    return runs[0]


def _inline(g: onnx.GraphProto, choice: Mapping[int, bool]) -> None:
    """In place: each If in `choice` (by id) replaced, where it stood, by its chosen branch's
    nodes (names prefixed by the If's, to stay unique) and an Identity per output."""
    taken = _made(g) | {n.name for n in g.node}
    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        if id(n) not in choice:
            nodes.append(n)
            continue
        branch = next(a.g for a in n.attribute if a.name == ("then_branch" if choice[id(n)] else "else_branch"))
        prefix = _name(n)
        rename = {}
        for name in [o for m in branch.node for o in m.output if o] + [t.name for t in branch.initializer]:
            rename[name] = _fresh(f"{prefix}/{name}", taken)
        for t in branch.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(t)
            copy.name = rename[t.name]
            g.initializer.append(copy)
        for m in branch.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(m)
            _rename_node(copy, rename)
            if copy.name:
                copy.name = _fresh(f"{prefix}/{copy.name}", taken)
            nodes.append(copy)
        for i, (out, bo) in enumerate(zip(n.output, branch.output, strict=False)):
            if out:
                nodes.append(helper.make_node("Identity", [rename.get(bo.name, bo.name)], [out],
                                              name=_fresh(f"{prefix}/output{i}", taken)))
    del g.node[:]
    g.node.extend(nodes)


def _rename_node(n: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    """`n`'s inputs and outputs renamed, and the outer-scope reads of its subgraphs (a name a
    subgraph makes itself shadows the outer one)."""
    n.input[:] = [rename.get(i, i) for i in n.input]
    n.output[:] = [rename.get(o, o) for o in n.output]
    for sub in _subgraphs(n):
        _rename_outer(sub, rename)


def _rename_outer(g: onnx.GraphProto, rename: Mapping[str, str]) -> None:
    """In place: the names `g` reads from outer scopes renamed (not those it makes itself)."""
    made = _made(g)
    inner = {k: v for k, v in rename.items() if k not in made}
    for m in g.node:
        m.input[:] = [inner.get(i, i) for i in m.input]
        for deeper in _subgraphs(m):
            _rename_outer(deeper, inner)
    for o in g.output:
        if o.name in inner:
            o.name = inner[o.name]


def _fresh(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out
