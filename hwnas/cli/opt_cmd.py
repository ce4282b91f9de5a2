"""`hwnas opt MODEL -p SPEC -o OUT.onnx`: run a pass pipeline and write ONNX (QDQ ONNX when
the pipeline quantized the graph)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from hwnas.cli.common import check_writable, console, load, say
from hwnas.errors import OutputError

if TYPE_CHECKING:
    from hwnas.ir.graph import Graph
    from hwnas.passes.base import Pass, PassResult
    from hwnas.passes.instruments import Instrument


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `opt` and its flags to the subcommands."""
    s = sub.add_parser("opt", help="run a pass pipeline and write the result as ONNX", description=(
        "Run the pass pipeline SPEC (e.g. 'canonicalize' or 'fold-batchnorm,dce') on MODEL and "
        "write the result as an ONNX model (in QDQ form when the pipeline quantized it)."))
    s.add_argument("model", type=Path)
    s.add_argument("-p", "--passes", required=True, metavar="SPEC", help="pipeline spec")
    s.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.onnx")
    add_pipeline_flags(s)
    return s


def add_pipeline_flags(s: argparse.ArgumentParser) -> None:
    """The flags of every command that runs a pipeline: instruments, plugins, calibration data."""
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
    """Run the pipeline and write the model."""
    from hwnas.backends.emit import save_model
    from hwnas.compile import run_pipeline
    from hwnas.passes import load_plugin, parse_pipeline

    check_writable(args.output)
    for plugin in args.plugin:
        load_plugin(plugin)
    parse_pipeline(args.passes)  # a wrong spec fails before the model loads
    graph = load(args.model)
    instruments, finish = instruments_from_args(args, graph)
    with finish:
        ran = run_pipeline(graph, args.passes, calib=None if args.calib_data is None else str(args.calib_data),
                           instruments=instruments)
    for note in ran.notes:
        say(f"warning: {note}")
    save_model(ran.graph, args.output)
    say(f"wrote {args.output} ({len(ran.graph.nodes)} nodes, {'changed' if ran.changed else 'unchanged'})")
    return 0


def instruments_from_args(args: argparse.Namespace,
                          graph: Graph) -> tuple[list[Instrument], contextlib.AbstractContextManager]:
    """The instruments the pipeline flags ask for (verifying GRAPH first with --verify), and a
    context to run the pipeline in: it shows progress and prints the pass times at the end."""
    from hwnas.ir.verifier import verify
    from hwnas.passes.instruments import DumpIR, PrintIR, Timing, Verify

    _check_pass_names(args.print_ir_after)
    instruments: list[Instrument] = []
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
    timing = Timing() if args.time_passes else None
    if timing:
        instruments.append(timing)
    instrument, progress = _pass_progress()
    instruments.append(instrument)

    @contextlib.contextmanager
    def finish() -> Iterator[None]:
        with progress:
            yield
        if timing:
            say(timing.report())

    return instruments, finish()


def _check_pass_names(names: list[str]) -> None:
    """--print-ir-after names registered passes (plugins loaded) or 'all': a misspelt name would
    otherwise print nothing, silently."""
    import difflib

    from hwnas.errors import PipelineError
    from hwnas.passes import registered_passes

    known = registered_passes()
    for name in names:
        if name != "all" and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise PipelineError(f"--print-ir-after: no pass named '{name}' ({hint}'hwnas passes' lists them)")


def _pass_progress() -> tuple[Instrument, Progress]:
    """An instrument that shows the running pass and how many have run (on a terminal), and
    the progress display to run it in. Built here so the CLI imports the passes only when
    a command runs them."""
    from hwnas.passes.instruments import Instrument

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    task = progress.add_task("passes", total=None)

    class PassProgress(Instrument):
        done = 0

        def before_pass(self, p: Pass, graph: Graph, depth: int) -> None:
            progress.update(task, description=f"pass {p.spec()[:60]} ({self.done} run)")

        def after_pass(self, p: Pass, result: PassResult, seconds: float, depth: int) -> None:
            self.done += 1

    return PassProgress(), progress
