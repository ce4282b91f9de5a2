"""Mutated ONNX files never crash the CLI: a seeded mutator corrupts real models (the example
small CNN and onnx's light models) at the protobuf level (wrong attribute kinds, unknown
attributes, cycles, dangling inputs, huge or negative dims, custom-domain ops with untyped
outputs, wrong dtypes and opsets) and at the byte level (bit flips, truncation, inserted and
deleted bytes), and runs `hwnas inspect` and `hwnas opt -p canonicalize` on each, in process.

    .venv/bin/python tools/bench/fuzz.py [--cases 10000] [--seed 0] [--quick] [--out DIR]

Every run must end in exit code 0, or exit code 2 with one line on stderr and no output file.
Anything else is counted by kind: a traceback (an exception escaped `hwnas.cli.main`), an
internal error (the CLI's last-resort catch fired), more than one line on stderr, or an output
file left behind after a failure. Results: tools/bench/results/fuzz.json, with counts per
outcome and mutation and the first line and last frame of every traceback found.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import onnx
from onnx import AttributeProto, TensorProto, helper

ROOT = Path(__file__).resolve().parents[2]
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light"
SEEDS = (ROOT / "examples/small_cnn.onnx", LIGHT / "light_squeezenet.onnx", LIGHT / "light_bvlc_alexnet.onnx",
         LIGHT / "light_zfnet512.onnx", LIGHT / "light_inception_v1.onnx", LIGHT / "light_vgg19.onnx")
"""Seed models: small enough that thousands of runs take minutes."""
COMMANDS = ("inspect", "opt")
QUICK_CASES = 300

# -- the mutator -----------------------------------------------------------------------------

Mutation = Callable[[onnx.ModelProto, random.Random], None]
_PROTO: dict[str, Mutation] = {}


def _proto(fn: Mutation) -> Mutation:
    _PROTO[fn.__name__.lstrip("_").replace("_", "-")] = fn
    return fn


def _node(m: onnx.ModelProto, r: random.Random) -> onnx.NodeProto:
    return r.choice(list(m.graph.node))


@_proto
def _attr_wrong_kind(m: onnx.ModelProto, r: random.Random) -> None:
    """An attribute rewritten with another kind (a string `kernel_shape`, a float `axis`)."""
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return _unknown_attr(m, r)
    a = r.choice(list(r.choice(nodes).attribute))
    value = r.choice(["same", 1.5, 3, [1, 2], [0.5], ["x", "y"], b"\xff\xfe"])
    new = helper.make_attribute(a.name, value)
    a.Clear()
    a.CopyFrom(new)


@_proto
def _unknown_attr(m: onnx.ModelProto, r: random.Random) -> None:
    """An attribute the op does not have."""
    n = _node(m, r)
    n.attribute.append(helper.make_attribute(r.choice(["bogus", "kernel_shape", "axis", "alpha", "mode"]),
                                             r.choice([1, 2.0, "x", [3, 3]])))


@_proto
def _attr_bad_value(m: onnx.ModelProto, r: random.Random) -> None:
    """An attribute of the right kind with a value out of range (negative or huge ints, empty lists)."""
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return _unknown_attr(m, r)
    a = r.choice(list(r.choice(nodes).attribute))
    if a.type == AttributeProto.INT:
        a.i = r.choice([-1, 0, 2**31, -(2**62), 7])
    elif a.type == AttributeProto.INTS:
        del a.ints[:]
        a.ints.extend(r.choice([[], [0], [-1, -1], [2**40, 1], [1] * 9]))
    elif a.type == AttributeProto.FLOAT:
        a.f = r.choice([float("nan"), float("inf"), -1e30, 0.0])
    elif a.type == AttributeProto.STRING:
        a.s = r.choice([b"", b"bogus", b"\xff"])


@_proto
def _cycle(m: onnx.ModelProto, r: random.Random) -> None:
    """A node reads the output of a node after it (or its own output)."""
    nodes = list(m.graph.node)
    i = r.randrange(len(nodes))
    j = r.randrange(i, len(nodes))
    n = nodes[i]
    if n.input and nodes[j].output:
        n.input[r.randrange(len(n.input))] = nodes[j].output[0]


@_proto
def _dangling_input(m: onnx.ModelProto, r: random.Random) -> None:
    """A node reads a value nothing defines."""
    n = _node(m, r)
    if n.input:
        n.input[r.randrange(len(n.input))] = "nowhere_" + str(r.randrange(100))
    else:
        n.input.append("nowhere")


@_proto
def _drop_input(m: onnx.ModelProto, r: random.Random) -> None:
    """A node with an input too few, or an extra one."""
    n = _node(m, r)
    if n.input and r.random() < 0.5:
        del n.input[-1]
    else:
        n.input.append(r.choice([m.graph.input[0].name, "", n.input[0] if n.input else "x"]))


@_proto
def _huge_dim(m: onnx.ModelProto, r: random.Random) -> None:
    """A graph input's dim made huge, negative or zero, or a shape initializer rewritten."""
    if r.random() < 0.6:
        vi = r.choice(list(m.graph.input))
        dims = vi.type.tensor_type.shape.dim
        if dims:
            d = r.choice(list(dims))
            d.Clear()
            choice = r.choice([2**40, 2**31, -5, 0, 10**6, "N"])
            if isinstance(choice, str):
                d.dim_param = choice
            else:
                d.dim_value = choice
            return
    ints = [t for t in m.graph.initializer if t.data_type == TensorProto.INT64]
    if ints:
        t = r.choice(ints)
        arr = onnx.numpy_helper.to_array(t).copy()
        if arr.size:
            arr.flat[r.randrange(arr.size)] = r.choice([2**40, -7, 0, 10**6])
            t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))


@_proto
def _custom_domain(m: onnx.ModelProto, r: random.Random) -> None:
    """A node moved to a custom domain (its outputs untyped), or a custom op inserted."""
    if not any(o.domain == "com.example" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.example", 1))
    if r.random() < 0.5:
        _node(m, r).domain = "com.example"
        del m.graph.value_info[:]
        return
    i = r.randrange(len(m.graph.node))
    src = m.graph.node[i].output[0]
    custom = helper.make_node("Mystery", [src], [src + "_mystery"], domain="com.example", name="mystery")
    m.graph.node.insert(i + 1, custom)
    for later in list(m.graph.node)[i + 2:]:
        for k, x in enumerate(later.input):
            if x == src:
                later.input[k] = src + "_mystery"


@_proto
def _unknown_op(m: onnx.ModelProto, r: random.Random) -> None:
    """A node's op type replaced by one onnx does not define, or by another real op."""
    _node(m, r).op_type = r.choice(["NoSuchOp", "Relu", "Conv", "Gemm", "Reshape", "Concat", "LSTM", "If"])


@_proto
def _untyped(m: onnx.ModelProto, r: random.Random) -> None:
    """A graph input or output without a type, or with a wrong element type."""
    vi = r.choice(list(m.graph.input) + list(m.graph.output))
    if r.random() < 0.5:
        vi.ClearField("type")
    else:
        vi.type.tensor_type.elem_type = r.choice([0, 7, 9, 99, TensorProto.STRING])


@_proto
def _initializer(m: onnx.ModelProto, r: random.Random) -> None:
    """An initializer whose dtype, dims or data disagree."""
    if not m.graph.initializer:
        return _huge_dim(m, r)
    t = r.choice(list(m.graph.initializer))
    what = r.random()
    if what < 0.3:
        t.data_type = r.choice([0, TensorProto.INT8, TensorProto.DOUBLE, TensorProto.STRING, 99])
    elif what < 0.6 and t.dims:
        t.dims[r.randrange(len(t.dims))] = r.choice([0, 3, 2**33, -1])
    elif what < 0.8:
        t.raw_data = t.raw_data[: len(t.raw_data) // 2]
    else:
        t.name = m.graph.node[0].output[0]  # a constant and a node define the same name


@_proto
def _opset(m: onnx.ModelProto, r: random.Random) -> None:
    """The default opset set to a version that does not exist or that converts badly."""
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = r.choice([0, 1, 6, 99, -3, 2**40])


@_proto
def _outputs(m: onnx.ModelProto, r: random.Random) -> None:
    """Graph outputs removed, duplicated, or renamed to something undefined."""
    what = r.random()
    if what < 0.3 or not m.graph.output:
        del m.graph.output[:]
    elif what < 0.6:
        m.graph.output.append(m.graph.output[0])
    else:
        m.graph.output[0].name = "undefined_output"


@_proto
def _duplicate_output(m: onnx.ModelProto, r: random.Random) -> None:
    """Two nodes define the same value."""
    a, b = _node(m, r), _node(m, r)
    if a is not b and a.output and b.output:
        b.output[0] = a.output[0]


@_proto
def _subgraph_attr(m: onnx.ModelProto, r: random.Random) -> None:
    """An attribute holding a graph, a sparse tensor or a type."""
    n = _node(m, r)
    kind = r.choice(["graph", "sparse", "ref"])
    if kind == "graph":
        n.attribute.append(helper.make_attribute("body", helper.make_graph([], "g", [], [])))
    elif kind == "sparse":
        a = AttributeProto(name="sparse", type=AttributeProto.SPARSE_TENSOR)
        n.attribute.append(a)
    else:
        n.attribute.append(AttributeProto(name="alpha", ref_attr_name="outer", type=AttributeProto.FLOAT))


_BYTES: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bit-flip": lambda b, r: _flip(b, r, r.choice([1, 1, 2, 8, 32])),
    "truncate": lambda b, r: b[: r.randrange(len(b))],
    "insert-bytes": lambda b, r: _splice(b, r, bytes(r.randrange(256) for _ in range(r.randrange(1, 16))), 0),
    "delete-bytes": lambda b, r: _splice(b, r, b"", r.randrange(1, 16)),
    "overwrite": lambda b, r: _splice(b, r, bytes(r.randrange(256) for _ in range(8)), 8),
}


def _flip(data: bytes, r: random.Random, bits: int) -> bytes:
    out = bytearray(data)
    for _ in range(bits):
        i = r.randrange(len(out))
        out[i] ^= 1 << r.randrange(8)
    return bytes(out)


def _splice(data: bytes, r: random.Random, new: bytes, remove: int) -> bytes:
    i = r.randrange(len(data))
    return data[:i] + new + data[i + remove:]


MUTATIONS = (*_PROTO, *_BYTES)


def mutate(seed_model: bytes, r: random.Random) -> tuple[str, bytes]:
    """One mutant of the serialized model: (the mutation's name, the bytes). Two in five are
    byte-level; the rest mutate the protobuf (one to three mutations, named after the first)."""
    if r.random() < 0.4:
        name = r.choice(list(_BYTES))
        return name, _BYTES[name](seed_model, r)
    m = onnx.ModelProto()
    m.ParseFromString(seed_model)
    names = [r.choice(list(_PROTO)) for _ in range(r.choice([1, 1, 1, 2, 3]))]
    for name in names:
        try:
            _PROTO[name](m, r)
        except (ValueError, IndexError, KeyError, TypeError):
            pass  # an earlier mutation left nothing for this one to work on (an unreadable initializer, say)
    return names[0], m.SerializeToString()


def mutants(seed: int, count: int, seeds: tuple[Path, ...] = SEEDS) -> Iterator[tuple[int, str, str, bytes]]:
    """`count` mutants from a seeded generator: (index, seed model's stem, mutation, bytes).
    The same seed always gives the same files."""
    originals = [(p.stem, p.read_bytes()) for p in seeds]
    r = random.Random(seed)
    for i in range(count):
        stem, data = originals[i % len(originals)]
        name, mutant = mutate(data, r)
        yield i, stem, name, mutant


# -- running the CLI -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one CLI run ended: `kind` is ok, error (exit 2, one line, nothing written) or a failure:
    traceback, internal, multiline, wrote-on-error, bad-exit."""

    kind: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.kind not in ("ok", "error")


def run_cli(command: str, model: Path, out: Path) -> Outcome:
    """`hwnas COMMAND MODEL` in this process (`opt` with `-p canonicalize -o OUT`), judged."""
    from hwnas.cli import main

    argv = ["inspect", str(model)]
    if command == "opt":
        argv = ["opt", str(model), "-p", "canonicalize", "-o", str(out)]
    err, std = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            rc = main(argv)
    except BaseException as e:  # noqa: BLE001  (the point: anything that escapes is a finding)
        if isinstance(e, KeyboardInterrupt):
            raise
        frame = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
        return Outcome("traceback", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''} ({where})")
    lines = [x for x in err.getvalue().splitlines() if x.strip()]
    if any("internal error" in x for x in lines):
        return Outcome("internal", lines[0][:300])
    if rc == 0:
        return Outcome("ok")
    if rc != 2:
        return Outcome("bad-exit", f"exit {rc}: {lines[:1]}")
    if len(lines) != 1:
        return Outcome("multiline", " | ".join(lines)[:300])
    if out.exists():
        return Outcome("wrote-on-error", lines[0][:200])
    return Outcome("error", lines[0][:200])


class Run(TypedDict):
    """One command's run on one mutant, as fuzz.json lists it."""

    case: int
    seed_model: str
    mutation: str
    command: str
    outcome: str
    detail: str


def fuzz(seed: int, count: int, folder: Path) -> list[Run]:
    """Runs every command on `count` mutants; one row per run."""
    rows: list[Run] = []
    model = folder / "mutant.onnx"
    out = folder / "out.onnx"
    for i, stem, mutation, data in mutants(seed, count):
        if i and i % 1000 == 0:
            failed = sum(Outcome(r["outcome"]).failed for r in rows)
            print(f"{i:,} mutants, {failed} failures so far", flush=True)
        model.write_bytes(data)
        for command in COMMANDS:
            out.unlink(missing_ok=True)
            o = run_cli(command, model, out)
            rows.append({"case": i, "seed_model": stem, "mutation": mutation, "command": command, "outcome": o.kind,
                         "detail": o.detail})
    return rows


def main() -> int:
    from common import environment, parser, write_json
    from rich.console import Console
    from rich.table import Table

    ap = parser(__doc__, f"{QUICK_CASES} mutants")
    ap.add_argument("--cases", type=int, default=10_000, help="mutated files (default 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cases = QUICK_CASES if args.quick else args.cases
    console = Console()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = fuzz(args.seed, cases, Path(tmp))
    seconds = time.perf_counter() - started
    outcomes = Counter(r["outcome"] for r in rows)
    by_mutation: dict[str, Counter[str]] = {m: Counter() for m in MUTATIONS}
    for r in rows:
        by_mutation[r["mutation"]][r["outcome"]] += 1
    failures = [r for r in rows if Outcome(r["outcome"]).failed]
    kinds = ("ok", "error", "traceback", "internal", "multiline", "wrote-on-error", "bad-exit")
    table = Table(title=f"hwnas inspect / opt on {cases:,} mutated ONNX files (seed {args.seed})")
    table.add_column("mutation")
    for k in kinds:
        table.add_column(k, justify="right")
    for m, c in by_mutation.items():
        table.add_row(m, *(f"{c[k]:,}" for k in kinds))
    table.add_section()
    table.add_row("all", *(f"{outcomes[k]:,}" for k in kinds))
    console.print(table)
    for f in failures[:20]:
        console.print(f"case {f['case']} ({f['seed_model']}, {f['mutation']}, {f['command']}): {f['outcome']}: "
                      f"{f['detail']}", markup=False, highlight=False)
    doc = {"benchmark": "fuzz", "quick": args.quick, "machine": environment(), "seed": args.seed, "cases": cases,
           "runs": len(rows), "seconds": seconds, "seed_models": [p.name for p in SEEDS],
           "outcomes": {k: outcomes[k] for k in kinds},
           "by_mutation": {m: dict(c) for m, c in by_mutation.items()},
           "failures": failures, "errors_sample": sorted({r["detail"] for r in rows if r["outcome"] == "error"})[:40]}
    path = write_json(args.out, "fuzz", doc)
    console.print(f"{len(failures)} failures in {len(rows):,} runs, {seconds:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
