"""The `hwnas` command: inspect, opt, dump, passes.

Every error a user can cause prints one line (`hwnas: error: ...`) and exits with 2;
no output file is left half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hwnas.errors import HwnasError, OutputError

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HwnasError as e:
        console.print(f"hwnas: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("hwnas: interrupted", markup=False)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware model compiler and architecture search.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("inspect", help="per-layer table: op, shapes, params, MACs", description=(
        "Print a per-layer table of MODEL (an ONNX file or an hwnas .json/.hwnas dump): op, "
        "output shape, parameters and MACs, with totals; ops without a cost entry are listed as unpriced."))
    s.add_argument("model", type=Path)
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("opt", help="run a pass pipeline and write the result as ONNX", description=(
        "Run the pass pipeline SPEC (e.g. 'canonicalize' or 'fold-batchnorm,dce') on MODEL and "
        "write the result as an ONNX model."))
    s.add_argument("model", type=Path)
    s.add_argument("-p", "--passes", required=True, metavar="SPEC", help="pipeline spec")
    s.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.onnx")
    s.add_argument("--print-ir-after", action="append", default=[], metavar="NAME|all",
                   help="print the IR after this pass (repeatable; 'all' for every pass)")
    s.add_argument("--time-passes", action="store_true", help="print the time each pass took")
    s.add_argument("--dump-ir", type=Path, metavar="DIR", help="write the IR after each pass to DIR")
    s.add_argument("--verify", action="store_true", help="run the IR verifier after every pass")
    s.add_argument("--plugin", action="append", default=[], type=Path, metavar="FILE.py",
                   help="load passes from a Python file (repeatable)")
    s.set_defaults(func=cmd_opt)

    s = sub.add_parser("dump", help="print the IR as text, JSON or Graphviz DOT", description=(
        "Print MODEL's IR. text: the IR's own text form (weights elided unless --weights); "
        "json: JSON plus an .npz of weights (needs -o); dot: a Graphviz graph."))
    s.add_argument("model", type=Path)
    s.add_argument("--format", choices=("text", "json", "dot"), default="text")
    s.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    s.add_argument("--weights", action="store_true", help="text: include every weight (parses back)")
    s.set_defaults(func=cmd_dump)

    s = sub.add_parser("passes", help="list the registered passes", description="List the passes a pipeline can name.")
    s.add_argument("--plugin", action="append", default=[], type=Path, metavar="FILE.py")
    s.set_defaults(func=cmd_passes)
    return p


@contextlib.contextmanager
def _status(text: str) -> Iterator[None]:
    """A spinner on stderr for steps that can take seconds (silent when not a terminal)."""
    with console.status(text, spinner="dots"):
        yield


def _load(path: Path):  # noqa: ANN202
    from hwnas.frontends import load_graph

    with _status(f"loading {path}"):
        return load_graph(path)


def cmd_inspect(args: argparse.Namespace) -> int:
    from hwnas.ir.registry import op_counts

    graph = _load(args.model)
    table = Table(title=f"{graph.name} ({args.model.name})", show_lines=False)
    for col, just in (("#", "right"), ("node", "left"), ("op", "left"), ("output", "left"),
                      ("params", "right"), ("MACs", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    totals = [0, 0, 0]
    unpriced: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        c = op_counts(n)
        shape = ", ".join(str(v.type) if v.type else "?" for v in n.outputs)
        if c is None:
            unpriced[n.qualified_op] = unpriced.get(n.qualified_op, 0) + 1
            table.add_row(str(i), n.name, n.qualified_op, shape, "unpriced", "unpriced")
            continue
        totals[0] += c.params
        totals[1] += c.macs
        totals[2] += c.flops
        table.add_row(str(i), n.name, n.qualified_op, shape, f"{c.params:,}", f"{c.macs:,}")
    table.add_section()
    table.add_row("", "total", f"{len(graph.nodes)} nodes", "", f"{totals[0]:,}", f"{totals[1]:,}")
    out.print(table)
    out.print(f"params {totals[0]:,}  MACs {totals[1]:,}  FLOPs {totals[2]:,}")
    if unpriced:
        out.print("unpriced ops: " + ", ".join(f"{k} ×{v}" for k, v in sorted(unpriced.items())))
    return 0


def cmd_opt(args: argparse.Namespace) -> int:
    from hwnas.backends.emit.onnx import save_onnx
    from hwnas.ir.verifier import verify
    from hwnas.passes import PassRunner, load_plugin, parse_pipeline
    from hwnas.passes.instruments import DumpIR, PrintIR, Timing, Verify

    _check_writable(args.output)
    for plugin in args.plugin:
        load_plugin(plugin)
    pipeline = parse_pipeline(args.passes)
    graph = _load(args.model)
    instruments: list = []
    timing = Timing() if args.time_passes else None
    if args.verify:
        verify(graph)
        instruments.append(Verify())
    if args.print_ir_after:
        names = "all" if "all" in args.print_ir_after else frozenset(args.print_ir_after)
        instruments.append(PrintIR(names, sys.stdout))
    if args.dump_ir:
        try:
            instruments.append(DumpIR(args.dump_ir))
        except OSError as e:
            raise OutputError(f"{args.dump_ir}: cannot write IR dumps ({e.strerror or e})") from None
    if timing:
        instruments.append(timing)
    progress = _PassProgress()
    with progress.progress:
        result = PassRunner([*instruments, progress]).run(pipeline, graph)
    save_onnx(result.graph, args.output)
    if timing:
        console.print(timing.report(), markup=False, highlight=False)
    console.print(f"wrote {args.output} ({len(result.graph.nodes)} nodes, "
                  f"{'changed' if result.changed else 'unchanged'})", markup=False, highlight=False)
    return 0


class _PassProgress:
    """An instrument that shows the running pass and how many have run (on a terminal)."""

    def __init__(self) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=console, transient=True, disable=not console.is_terminal)
        self.task = self.progress.add_task("passes", total=None)
        self.done = 0

    def before_pass(self, p, graph, depth) -> None:  # noqa: ANN001
        self.progress.update(self.task, description=f"pass {p.spec()[:60]} ({self.done} run)")

    def after_pass(self, p, result, seconds, depth) -> None:  # noqa: ANN001
        self.done += 1


def cmd_dump(args: argparse.Namespace) -> int:
    from hwnas.backends.emit.onnx import write_atomic

    if args.output is not None:
        _check_writable(args.output)
    graph = _load(args.model)
    if args.format == "json":
        from hwnas.ir.serialize import save_json

        if args.output is None:
            raise OutputError("--format json writes GRAPH.json and GRAPH.npz: give -o GRAPH.json")
        j, w = save_json(graph, args.output)
        console.print(f"wrote {j} and {w}", markup=False, highlight=False)
        return 0
    if args.format == "dot":
        from hwnas.ir.dot import to_dot

        text = to_dot(graph)
    else:
        from hwnas.ir.text import print_graph

        text = print_graph(graph, elide_weights=not args.weights)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    from hwnas.passes import load_plugin, registered_passes

    for plugin in args.plugin:
        load_plugin(plugin)
    for name, cls in sorted(registered_passes().items()):
        doc = (cls.__doc__ or "").strip().split(".")[0].replace("\n", " ")
        out.print(f"{name:<20} {doc}", markup=False, highlight=False)
    return 0


def _check_writable(path: Path) -> None:
    """Fail before any work when the output cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: cannot write (it is a directory)")
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot write (folder '{parent}' does not exist)")
    import os

    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: cannot write (folder '{parent}' is not writable)")


if __name__ == "__main__":
    sys.exit(main())
