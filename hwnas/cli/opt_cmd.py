"""`hwnas opt MODEL -p SPEC -o OUT.onnx`: run a pass pipeline and write ONNX (QDQ ONNX when
the pipeline quantized the graph)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from hwnas.cli.common import check_writable, console, load, say
from hwnas.errors import OutputError

if TYPE_CHECKING:
    from hwnas.ir.graph import Graph
    from hwnas.passes.base import Pass


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("opt", help="run a pass pipeline and write the result as ONNX", description=(
        "Run the pass pipeline SPEC (e.g. 'canonicalize' or 'fold-batchnorm,dce') on MODEL and "
        "write the result as an ONNX model (in QDQ form when the pipeline quantized it)."))
    s.add_argument("model", type=Path)
    s.add_argument("-p", "--passes", required=True, metavar="SPEC", help="pipeline spec")
    s.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.onnx")
    add_pipeline_flags(s)
    return s


def add_pipeline_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--print-ir-after", action="append", default=[], metavar="NAME|all",
                   help="print the IR after this pass (repeatable; 'all' for every pass)")
    s.add_argument("--time-passes", action="store_true", help="print the time each pass took")
    s.add_argument("--dump-ir", type=Path, metavar="DIR", help="write the IR after each pass to DIR")
    s.add_argument("--verify", action="store_true", help="run the IR verifier after every pass")
    s.add_argument("--plugin", action="append", default=[], type=Path, metavar="FILE.py",
                   help="load passes from a Python file (repeatable)")
    s.add_argument("--calib-data", type=Path, metavar="FILE.npz",
                   help="sample inputs (arrays named by graph input) for every pass without calib= that takes them "
                        "(quantize, quantize-mixed, prune-channels{policy=sensitivity})")


def run(args: argparse.Namespace) -> int:
    check_writable(args.output)
    graph = load(args.model)
    result = run_pipeline(args, args.passes, graph)
    save_model(result.graph, args.output)
    say(f"wrote {args.output} ({len(result.graph.nodes)} nodes, {'changed' if result.changed else 'unchanged'})")
    return 0


def run_pipeline(args: argparse.Namespace, spec: str, graph):  # noqa: ANN001, ANN201
    """Parse SPEC and run it on GRAPH with the instruments the pipeline flags ask for."""
    from hwnas.ir.verifier import verify
    from hwnas.passes import PassRunner, load_plugin, parse_pipeline
    from hwnas.passes.instruments import DumpIR, PrintIR, Timing, Verify

    for plugin in args.plugin:
        load_plugin(plugin)
    pipeline = parse_pipeline(spec)
    if getattr(args, "calib_data", None) is not None:
        pipeline, used = with_calibration(pipeline, str(args.calib_data))
        if not used:
            say(f"warning: --calib-data {args.calib_data} is unused (no quantize pass without calib= in '{spec}')")
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
    if timing:
        say(timing.report())
    return result


def with_calibration(p: Pass, calib: str) -> tuple[Pass, bool]:
    """P with `calib` set on every pass in it that takes calibration data (quantize,
    quantize-mixed) and has none; whether any had none."""
    if any(f.name == "calib" for f in dataclasses.fields(p)):
        return (dataclasses.replace(p, calib=calib), True) if not p.calib else (p, False)
    children = getattr(p, "passes", None)
    if not isinstance(children, tuple):
        return p, False
    replaced = [with_calibration(c, calib) for c in children]
    return dataclasses.replace(p, passes=tuple(c for c, _ in replaced)), any(u for _, u in replaced)


def save_model(graph: Graph, path: Path) -> None:
    """Write float ONNX, or QDQ ONNX when the graph carries quantization annotations."""
    import onnx

    from hwnas.backends.emit.onnx import save_onnx, write_atomic

    if not any(n.ann.quant is not None for n in graph.nodes):
        save_onnx(graph, path)
        return
    from hwnas.backends.emit.qdq import to_qdq_onnx

    data = to_qdq_onnx(graph).SerializeToString()
    onnx.checker.check_model(data, full_check=False)
    write_atomic(path, data)


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
