"""`hwnas analog partition MODEL --target analog-pcm --data D.npz -o OUT.json`: which weight layers go
on crossbar tiles and which stay on the digital core (`hwnas.analog.partition`), written as placements
that `hwnas cost`, `hwnas dump --format html` and `hwnas analog eval -p ''` read."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from hwnas.cli.common import LazyChoices, check_writable, console, load, out, say, status, task_names
from hwnas.errors import DataError, HwnasError, OutputError

if TYPE_CHECKING:
    from hwnas.ir.graph import Graph
    from hwnas.tasks import Task

SUFFIXES = (".json", ".hwnas")


def add_action(actions: argparse._SubParsersAction) -> None:
    """Adds `hwnas analog partition` to the `analog` command's actions."""
    p = actions.add_parser("partition", help="choose analog or digital per layer (hybrid)", description=(
        "Run the target's compile pipeline on MODEL, then decide per weight layer: crossbar tiles or the "
        "digital core. Each layer alone is simulated on aihwkit tiles --time after programming on --samples "
        "of the --split (its accuracy drop against the float model), each two connected layers "
        "together, and both sides are priced by the target's cost model (the activations moved between tiles "
        "and the digital core included); a 0-1 program (scipy MILP) minimizes --objective within the chip's "
        "tiles and --max-drop, and the chosen set is simulated whole and re-solved while over the budget. "
        "OUT (.json with an .npz beside it, or .hwnas text) holds the graph with its placements: digital "
        "layers say why ('partition: ...'). Score it with `hwnas analog eval OUT -p '' --data D.npz`. "
        "--json M.json also writes the measurements, which the pass partition-hybrid{sensitivity=\"M.json\"} "
        "decides from again inside a pipeline."))
    p.add_argument("model", type=Path, nargs="?", help="ONNX model (omit with --task)")
    p.add_argument("-t", "--target", default="analog-pcm", help="analog target name or .toml (default: analog-pcm)")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help="labelled data: x (inputs), y (int labels)")
    p.add_argument("--task", "--subject", dest="task", choices=LazyChoices(task_names), metavar="NAME",
                   help="a registered task: %(choices)s (bundled model and data)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.json|OUT.hwnas")
    p.add_argument("--time", default="1d", help="time after programming the drops are measured at (default: 1d)")
    p.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                   help="accuracy the analog layers may lose together, in points (default: 1)")
    p.add_argument("--objective", choices=("energy", "latency", "both"), default="energy",
                   help="what to minimize; both: energy and latency as shares of all-digital, added (default: energy)")
    p.add_argument("--tiles", type=int, default=0, help="the chip's tiles (default: the target's)")
    p.add_argument("--samples", type=int, default=1000, help="samples the drops are measured on (default: 1000)")
    p.add_argument("--split", choices=("train", "test"), default="train", help=(
        "where the samples come from (default: train). A model is surer of the samples it was trained on, so "
        "drops measured there can understate what held-out data loses; test decides on the report's data"))
    p.add_argument("--repeats", type=int, default=3, help="programmings per measurement (default: 3)")
    p.add_argument("--rounds", type=int, default=4, help="whole-partition simulations at most (default: 4)")
    p.add_argument("--no-pairs", action="store_true", help="do not measure connected pairs of layers")
    p.add_argument("-p", "--passes", metavar="SPEC", help="pipeline before deciding (default: the target's)")
    p.add_argument("--test-fraction", type=float, default=0.3,
                   help="share of --data held out as the test split when it has no x_test (default: 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the decision's figures as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Checks everything cheap first, then decides, prints, and writes OUT (and --json) last."""
    from hwnas.analog.times import format_time, parse_times

    if (args.model is None) == (args.task is None):
        raise HwnasError("give either MODEL with --data FILE.npz, or --task NAME")
    if args.model is not None and args.data is None:
        raise HwnasError("MODEL needs --data FILE.npz (arrays x and y) to measure the layers' drops on")
    try:
        (t_s,) = parse_times(args.time)
    except ValueError as e:
        raise HwnasError(f"--time: {e}" if "," not in args.time else "--time takes one time") from None
    if not 0 <= args.max_drop < 100:
        raise HwnasError(f"--max-drop is in points, from 0 to 100, not {args.max_drop}")
    for flag, value in (("--samples", args.samples), ("--repeats", args.repeats), ("--rounds", args.rounds)):
        if value < 1:
            raise HwnasError(f"{flag} must be at least 1, not {value}")
    if args.tiles < 0:
        raise HwnasError(f"--tiles must be positive (0: the target's), not {args.tiles}")
    if args.output.suffix not in SUFFIXES:
        raise OutputError(f"{args.output}: write .json or .hwnas (ONNX has no place for the placements)")
    for path in (args.output, args.json):
        if path is not None:
            check_writable(path)
    from hwnas.backends.target import Analog, load_target

    target = load_target(args.target)
    target.section(Analog)  # refuses a target of another kind in one line
    graph, task = _graph_and_task(args)
    from hwnas.compile import run_pipeline

    spec = args.passes if args.passes is not None else target.compile.pipeline
    with status(f"running {spec[:60]}"):
        graph = run_pipeline(graph, spec).graph
    x, y = task.split(args.split)[0][: args.samples], task.expected(args.split)[: args.samples]
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from hwnas.analog.partition import partition_hybrid, place

    with Progress(TextColumn("simulating {task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        bar = progress.add_task("layers", total=None)
        part = partition_hybrid(graph, x, y, args.target, t_s=t_s, max_drop=args.max_drop / 100,
                                objective=args.objective, repeats=args.repeats, rounds=args.rounds, tiles=args.tiles,
                                pairs=not args.no_pairs, seed=args.seed,
                                on_step=lambda what: progress.update(bar, advance=1, description=what[-40:]))
    place(graph, part)
    out.print(f"{task.name} on {target.name}, drops after {format_time(t_s)} on {len(x)} {args.split} samples "
              f"({args.repeats} programmings): {part.summary()}", markup=False, highlight=False, soft_wrap=True)
    table = Table()
    for col in ("layer", "op", "side", "tiles", "energy tiles", "energy digital", "drop alone", "why digital"):
        table.add_column(col, justify="left" if col in ("layer", "op", "why digital") else "right")
    from hwnas.backends.cost.report import format_joules

    for name, s in part.layers.items():
        on = name in part.analog
        drop = "" if s.fixed else f"{s.drop * 100:.2f} ± {s.drop_std * 100:.2f}"
        table.add_row(name, s.op, "analog" if on else "digital", str(s.tiles), format_joules(s.analog_energy_j),
                      format_joules(s.digital_energy_j), drop, "" if on else part.reason(name))
    out.print(table)
    if args.output.suffix == ".json":
        from hwnas.ir.serialize import save_json

        save_json(graph, args.output)
        say(f"wrote {args.output} and {args.output.with_suffix('.npz')}")
    else:
        from hwnas.files import write_atomic
        from hwnas.ir.text import print_graph

        write_atomic(args.output, print_graph(graph, elide_weights=False))
        say(f"wrote {args.output}")
    if args.json is not None:
        from hwnas.files import write_atomic
        from hwnas.passes.partition_hybrid import sensitivity_doc

        doc = sensitivity_doc(part, target=target.name, model=str(args.model) if args.model else None,
                              task=task.name, pipeline=spec, split=args.split, samples=len(x), repeats=args.repeats)
        write_atomic(args.json, json.dumps(doc, indent=1))
        say(f"wrote {args.json}")
    return 0


def _graph_and_task(args: argparse.Namespace) -> tuple[Graph, Task]:
    from hwnas.tasks import load_task
    from hwnas.tasks.data import task_from_data

    if args.task is not None:
        with status(f"loading task {args.task}"):
            task = load_task(args.task)
        return task.graph.copy(), task
    graph = load(args.model)
    try:
        return graph, task_from_data(graph, args.data, test_fraction=args.test_fraction, seed=args.seed)
    except (OSError, ValueError) as e:
        raise DataError(f"{args.data}: {e}") from None
