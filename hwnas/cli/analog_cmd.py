"""`hwnas analog eval MODEL --target analog-pcm --data DATA.npz --times 1,1d,30d --repeats N`: the
model's weight layers on simulated PCM crossbar tiles (aihwkit), its accuracy at each time after
programming, mean ± std over programmings, beside the float model's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from hwnas.cli.analog_partition import add_action
from hwnas.cli.common import LazyChoices, check_writable, console, load, out, say, status, task_names
from hwnas.errors import DataError, HwnasError

if TYPE_CHECKING:
    from hwnas.tasks import Task

DEFAULT_TIMES = "1,3600,86400,2592000"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds `hwnas analog` and its subcommand `eval`."""
    s = sub.add_parser("analog", help="simulate the model on analog crossbar tiles (aihwkit)",
                       description="Analog in-memory computing through aihwkit's PCM tiles.")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = actions.add_parser("eval", help="accuracy at times after programming (noise and drift)", description=(
        "Run the target's compile pipeline and map-analog on MODEL, put the placed layers on aihwkit inference "
        "tiles set from the target file ([analog] bits and tile size, [analog.simulation] PCM noise, drift and "
        "drift compensation), and report the accuracy on the test data at each time after programming: mean ± "
        "std over --repeats programmings, beside the float model's. Data: --data FILE.npz with x and y (the test "
        "split is x_test/y_test, else a stratified --test-fraction of x), or --task for a bundled model and data. "
        "Layers aihwkit cannot take stay digital, named in one warning."))
    e.add_argument("model", type=Path, nargs="?", help="ONNX model (omit with --task)")
    e.add_argument("-t", "--target", default="analog-pcm", help="analog target name or .toml (default: analog-pcm)")
    e.add_argument("--data", type=Path, metavar="FILE.npz", help="labelled data: x (inputs), y (int labels)")
    e.add_argument("--task", "--subject", dest="task", choices=LazyChoices(task_names), metavar="NAME",
                   help="a registered task: %(choices)s (bundled model and data)")
    e.add_argument("--times", default=DEFAULT_TIMES, metavar="T1,T2,...",
                   help=f"seconds after programming, or with s/m/h/d/w/y (default: {DEFAULT_TIMES})")
    e.add_argument("--repeats", type=int, default=5, help="programmings, each with fresh noise (default: 5)")
    e.add_argument("-p", "--passes", metavar="SPEC",
                   help="pipeline before simulating (default: the target's compile pipeline, then map-analog)")
    e.add_argument("--no-compensation", action="store_true", help="turn the target's global drift compensation off")
    e.add_argument("--test-fraction", type=float, default=0.3,
                   help="share of --data held out for the report when it has no x_test (default: 0.3)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    e.set_defaults(func=run)
    add_action(actions)  # partition
    return s


def run(args: argparse.Namespace) -> int:
    """Checks everything cheap first, then maps, simulates and prints; writes JSON last."""
    from hwnas.analog.times import format_time, parse_times

    if (args.model is None) == (args.task is None):
        raise HwnasError("give either MODEL with --data FILE.npz, or --task NAME")
    if args.model is not None and args.data is None:
        raise HwnasError("MODEL needs --data FILE.npz (arrays x and y) to score the analog model on")
    try:
        times = parse_times(args.times)
    except ValueError as e:
        raise HwnasError(f"--times: {e}") from None
    if args.repeats < 1:
        raise HwnasError(f"--repeats must be at least 1, not {args.repeats}")
    if not 0 < args.test_fraction < 1:
        raise HwnasError(f"--test-fraction must be in (0, 1), not {args.test_fraction}")
    if args.json is not None:
        check_writable(args.json)
    from hwnas.backends.target import Analog, load_target

    target = load_target(args.target)
    target.section(Analog)  # refuses a target of another kind in one line
    task = _task(args)
    from hwnas.compile import run_pipeline
    from hwnas.passes.map_analog import MapAnalog

    spec = args.passes if args.passes is not None else ",".join(
        p for p in (target.compile.pipeline, MapAnalog(target=str(target.path or target.name)).spec()) if p)
    graph = task.graph.copy()
    with status(f"running {spec[:60]}"):
        graph = run_pipeline(graph, spec).graph
    from hwnas.analog.convert import to_analog
    from hwnas.analog.evaluate import drift_accuracy
    from hwnas.tasks.evaluate import evaluate

    x, y = task.test
    with status("scoring the float model"):
        float_acc = evaluate(graph, task)
    with status("programming aihwkit tiles"):
        model = to_analog(graph, target, compensation=False if args.no_compensation else None)
    if not model.layers:
        raise HwnasError(f"{args.model or args.task}: no layer is on analog tiles ("
                         + "; ".join(f"'{n}': {why}" for n, why in model.digital.items()) + ")")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        bar = progress.add_task("simulating", total=args.repeats * len(times))
        points = drift_accuracy(model, x, task.expected("test"), times, repeats=args.repeats, seed=args.seed,
                                on_step=lambda: progress.advance(bar))
    compensation = target.section(Analog).simulation.drift_compensation and not args.no_compensation
    out.print(f"{task.name} on {target.name}: {len(model.layers)} analog layers, {len(model.digital)} digital; "
              f"drift compensation {'on' if compensation else 'off'}; {len(x)} test samples, {args.repeats} "
              f"programmings", markup=False, highlight=False, soft_wrap=True)
    table = Table()
    for col in ("after programming", "accuracy", "± std", "vs float"):
        table.add_column(col, justify="right")
    table.add_row("float (digital)", f"{float_acc:.2%}", "", "")
    for p in points:
        table.add_row(format_time(p.t_s), f"{p.mean:.2%}", f"{p.std:.2%}", f"{(p.mean - float_acc) * 100:+.2f} pt")
    out.print(table)
    if args.json is not None:
        from hwnas.files import write_atomic

        doc = {"model": str(args.model) if args.model else None, "task": args.task, "target": target.name,
               "pipeline": spec, "drift_compensation": compensation, "samples": len(x), "repeats": args.repeats,
               "seed": args.seed, "float_accuracy": float_acc, "analog_layers": list(model.layers),
               "digital_layers": model.digital,
               "times": [{"t_s": p.t_s, "mean": p.mean, "std": p.std, "accuracies": list(p.accuracies)}
                         for p in points]}
        write_atomic(args.json, json.dumps(doc, indent=1))
        say(f"wrote {args.json}")
    return 0


def _task(args: argparse.Namespace) -> Task:
    from hwnas.tasks import load_task
    from hwnas.tasks.data import task_from_data

    if args.task is not None:
        with status(f"loading task {args.task}"):
            return load_task(args.task)
    graph = load(args.model)
    try:
        return task_from_data(graph, args.data, test_fraction=args.test_fraction, seed=args.seed)
    except (OSError, ValueError) as e:
        raise DataError(f"{args.data}: {e}") from None
