"""`hwnas analog eval MODEL --target analog-pcm --data DATA.npz --times 1,1d,30d --repeats N`: the
model's weight layers on simulated PCM crossbar tiles (aihwkit), its accuracy at each time after
programming, mean ± std over programmings, beside the float model's.

`hwnas analog train MODEL --target analog-pcm --data DATA.npz -o OUT.pt [--epochs E] [--distill]`:
hardware-aware training (`hwnas.analog.train`), the accuracy at each time before and after it, and
the trained aihwkit state in OUT (`torch.load(OUT, weights_only=True)`)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.analog_partition import add_action
from hwnas.cli.common import LazyChoices, check_writable, console, load, out, say, status, task_names
from hwnas.errors import DataError, HwnasError

if TYPE_CHECKING:
    from hwnas.analog.convert import AnalogModel
    from hwnas.analog.evaluate import DriftPoint
    from hwnas.backends.target import Target
    from hwnas.ir.graph import Graph
    from hwnas.tasks import Task

DEFAULT_TIMES = "1,3600,86400,2592000"
TRAIN_TIMES = "1,86400,2592000"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds `hwnas analog` and its subcommands `eval`, `train` and `partition`."""
    s = sub.add_parser("analog", help="simulate the model on analog crossbar tiles (aihwkit)",
                       description="Analog in-memory computing through aihwkit's PCM tiles.")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = actions.add_parser("eval", help="accuracy at times after programming (noise and drift)", description=(
        "Run the target's compile pipeline and map-analog on MODEL, put the placed layers on aihwkit inference "
        "tiles set from the target file ([analog] bits and tile size, [analog.simulation] PCM noise, drift and "
        "drift compensation), and report the accuracy on the test data at each time after programming: mean ± "
        "std over --repeats programmings, beside the float model's. Data: --data FILE.npz with x and y (the test "
        "split is x_test/y_test, else a stratified --test-fraction of x), or --task for a bundled model and data. "
        "Placed layers the aihwkit simulation cannot take stay digital, named in one warning."))
    _common(e, DEFAULT_TIMES, 5)
    e.add_argument("--state", type=Path, metavar="FILE.pt",
                   help="the tiles' weights from `hwnas analog train -o FILE.pt` (same model, target and pipeline)")
    e.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    e.set_defaults(func=run)
    t = actions.add_parser("train", help="hardware-aware training (noise injection, distillation)", description=(
        "Hardware-aware training: run the target's compile pipeline and map-analog on MODEL, put the placed "
        "layers on aihwkit tiles as `analog eval` does, and fine-tune on the training data while aihwkit adds "
        "Gaussian noise of --noise times each tile's largest weight to the weights of every step (its weight "
        "modifier) and remaps the tiles' columns after each step; --distill adds distillation from the float "
        "model. Reports the accuracy on the test data at each time after programming before and after "
        "training, and writes the trained aihwkit state to OUT (a torch state dict that "
        "torch.load(OUT, weights_only=True) reads; load it with hwnas.analog.convert.load_analog_state into "
        "to_analog of the same graph and target). Where noise costs accuracy, train longer and faster: at 6x the "
        "PCM noise, --epochs 12 --lr 3e-3 --noise 0.3 --distill halves the MNIST CNN's 1-day drop."))
    _common(t, TRAIN_TIMES, 3)
    t.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.pt", help="the trained aihwkit state")
    t.add_argument("--epochs", type=float, default=1.0, help="passes over the training data (default: 1)")
    t.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (default: 1e-4)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--noise", type=float, default=None, metavar="STD",
                   help="injected weight noise, relative to each tile's largest weight (default: 0.06)")
    t.add_argument("--distill", action="store_true", help="distil from the float model (kd-alpha 0.5, T = 4)")
    t.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    t.set_defaults(func=run_train)
    add_action(actions)  # partition
    return s


def _common(p: argparse.ArgumentParser, times: str, repeats: int) -> None:
    """The model, data and simulation options `eval` and `train` share."""
    p.add_argument("model", type=Path, nargs="?", help="ONNX model (omit with --task)")
    p.add_argument("-t", "--target", default="analog-pcm", help="analog target name or .toml (default: analog-pcm)")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help="labelled data: x (inputs), y (int labels)")
    p.add_argument("--task", "--subject", dest="task", choices=LazyChoices(task_names), metavar="NAME",
                   help="a registered task: %(choices)s (bundled model and data)")
    p.add_argument("--times", default=times, metavar="T1,T2,...",
                   help=f"seconds after programming, or with s/m/h/d/w/y (default: {times})")
    p.add_argument("--repeats", type=int, default=repeats,
                   help=f"programmings, each with fresh noise (default: {repeats})")
    p.add_argument("-p", "--passes", metavar="SPEC",
                   help="pipeline before simulating (default: the target's compile pipeline, then map-analog)")
    p.add_argument("--no-compensation", action="store_true", help="turn the target's global drift compensation off")
    p.add_argument("--test-fraction", type=float, default=0.3,
                   help="share of --data held out for the report when it has no x_test (default: 0.3)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Checks everything cheap first, then maps, simulates and prints; writes JSON last."""
    times = _check(args)
    state = _read_state(args.state) if args.state is not None else None
    target, task, spec, graph, float_acc = _prepare(args)
    model = _convert(args, graph, target)
    if state is not None:
        _load_state(model, state, args.state)
    points = _simulate(args, model, task, times, "simulating")
    out.print(_summary(args, task, target, model), markup=False, highlight=False, soft_wrap=True)
    table = _table("accuracy", "± std", "vs float")
    table.add_row("float (digital)", f"{float_acc:.2%}", "", "")
    for p in points:
        table.add_row(_time(p), f"{p.mean:.2%}", f"{p.std:.2%}", f"{(p.mean - float_acc) * 100:+.2f} pt")
    out.print(table)
    if args.json is not None:
        _write_json(args.json, {**_doc(args, task, target, spec, float_acc, model),
                                "state": str(args.state) if args.state else None, "times": _points(points)})
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Checks everything cheap first (nothing is written on bad input), simulates the model before,
    trains with a progress bar, simulates after, prints both, and writes OUT (and JSON) last."""
    times = _check(args)
    if not (math.isfinite(args.epochs) and args.epochs > 0):
        raise HwnasError(f"--epochs must be a positive number of passes over the data, not {args.epochs}")
    if not (math.isfinite(args.lr) and args.lr > 0) or args.batch_size < 1:
        raise HwnasError(f"--lr must be positive and --batch-size at least 1, not {args.lr} and {args.batch_size}")
    if args.noise is not None and not 0 <= args.noise < 1:
        raise HwnasError(f"--noise is relative to each tile's largest weight: from 0 to below 1, not {args.noise}")
    check_writable(args.output)
    from hwnas.analog.convert import analog_state_dict
    from hwnas.analog.train import DEFAULT_NOISE, hwa_train
    from hwnas.compress.finetune import FinetuneConfig

    noise = DEFAULT_NOISE if args.noise is None else args.noise
    target, task, spec, graph, float_acc = _prepare(args)
    before = _simulate(args, _convert(args, graph, target), task, times, "before training")
    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("training (loss {task.description})"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        bar = progress.add_task("-", total=None)
        trained = hwa_train(graph, target, task.train, config, noise=noise, distill=args.distill,
                            compensation=False if args.no_compensation else None,
                            progress=lambda step, steps, loss: progress.update(bar, completed=step, total=steps,
                                                                               description=f"{loss:.4f}"))
    state = analog_state_dict(trained.model)  # before programming replaces the tiles' weights with noisy ones
    after = _simulate(args, trained.model, task, times, "after training")
    out.print(_summary(args, task, target, trained.model) + f"; trained {args.epochs:g} epochs on "
              f"{len(task.train[0])} samples with noise {noise:g}{', distilled' if args.distill else ''}",
              markup=False, highlight=False, soft_wrap=True)
    table = _table("before", "± std", "after", "± std", "change")
    table.add_row("float (digital)", f"{float_acc:.2%}", "", "", "", "")
    for b, a in zip(before, after, strict=True):
        table.add_row(_time(b), f"{b.mean:.2%}", f"{b.std:.2%}", f"{a.mean:.2%}", f"{a.std:.2%}",
                      f"{(a.mean - b.mean) * 100:+.2f} pt")
    out.print(table)
    import io

    import torch

    from hwnas.files import write_atomic

    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(args.output, buf.getvalue())
    say(f"wrote {args.output}")
    if args.json is not None:
        _write_json(args.json, {**_doc(args, task, target, spec, float_acc, trained.model), "epochs": args.epochs,
                                "lr": args.lr, "noise": noise, "distill": args.distill, "losses": trained.losses,
                                "state": str(args.output), "before": _points(before), "after": _points(after)})
    return 0


def _check(args: argparse.Namespace) -> list[float]:
    """The checks `eval` and `train` share; the parsed times."""
    from hwnas.analog.times import parse_times

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
    return times


def _prepare(args: argparse.Namespace) -> tuple[Target, Task, str, Graph, float]:
    """The target, the task, the pipeline that ran, the graph after it and its float accuracy."""
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
    from hwnas.tasks.evaluate import evaluate

    with status("scoring the float model"):
        float_acc = evaluate(graph, task)
    return target, task, spec, graph, float_acc


def _convert(args: argparse.Namespace, graph: Graph, target: Target) -> AnalogModel:
    """The graph on aihwkit tiles; refuses one with no analog layer."""
    from hwnas.analog.convert import to_analog

    with status("programming aihwkit tiles"):
        model = to_analog(graph, target, compensation=False if args.no_compensation else None)
    if not model.layers:
        raise HwnasError(f"{args.model or args.task}: no layer is on analog tiles ("
                         + "; ".join(f"'{n}': {why}" for n, why in model.digital.items()) + ")")
    return model


def _read_state(path: Path) -> dict[str, Any]:
    """A state `hwnas analog train` wrote (tensors only: weights_only), or one line saying why not."""
    import torch

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise DataError(f"--state {path}: no such file") from None
    except Exception as e:  # noqa: BLE001  (torch.load raises anything from struct.error to UnpicklingError)
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"--state {path}: not a state written by hwnas analog train ({why})") from None
    if not isinstance(state, dict):
        raise DataError(f"--state {path}: not a state written by hwnas analog train (a {type(state).__name__})")
    return state


def _load_state(model: AnalogModel, state: dict[str, Any], path: Path) -> None:
    """`state` (from `path`) into `model`; one line when it does not fit."""
    from hwnas.analog.convert import load_analog_state

    unknown = sorted(set(state) - set(model.module.state_dict()))
    if unknown:
        raise DataError(f"--state {path}: does not fit this model, target and pipeline (it has '{unknown[0]}')")
    try:
        load_analog_state(model, state)
    except (RuntimeError, KeyError, ValueError) as e:
        raise DataError(f"--state {path}: does not fit this model, target and pipeline "
                        f"({' '.join(str(e).split())[:200]})") from None


def _simulate(args: argparse.Namespace, model: AnalogModel, task: Task, times: list[float],
              what: str) -> list[DriftPoint]:
    """`drift_accuracy` on the test split with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hwnas.analog.evaluate import drift_accuracy

    with Progress(TextColumn(f"simulating {what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        bar = progress.add_task(what, total=args.repeats * len(times))
        return drift_accuracy(model, task.test[0], task.expected("test"), times, repeats=args.repeats,
                              seed=args.seed, on_step=lambda: progress.advance(bar))


def _compensation(args: argparse.Namespace, target: Target) -> bool:
    from hwnas.backends.target import Analog

    return target.section(Analog).simulation.drift_compensation and not args.no_compensation


def _summary(args: argparse.Namespace, task: Task, target: Target, model: AnalogModel) -> str:
    return (f"{task.name} on {target.name}: {len(model.layers)} analog layers, {len(model.digital)} digital; "
            f"drift compensation {'on' if _compensation(args, target) else 'off'}; {len(task.test[0])} test "
            f"samples, {args.repeats} programmings")


def _table(*columns: str) -> Table:
    table = Table()
    for col in ("after programming", *columns):
        table.add_column(col, justify="right")
    return table


def _time(p: DriftPoint) -> str:
    from hwnas.analog.times import format_time

    return format_time(p.t_s)


def _doc(args: argparse.Namespace, task: Task, target: Target, spec: str, float_acc: float,
         model: AnalogModel) -> dict[str, object]:
    """What `eval` and `train` both put in their JSON."""
    return {"model": str(args.model) if args.model else None, "task": args.task, "target": target.name,
            "pipeline": spec, "drift_compensation": _compensation(args, target), "samples": len(task.test[0]),
            "repeats": args.repeats,
            "seed": args.seed, "float_accuracy": float_acc, "analog_layers": list(model.layers),
            "digital_layers": model.digital}


def _points(points: list[DriftPoint]) -> list[dict[str, object]]:
    return [{"t_s": p.t_s, "mean": p.mean, "std": p.std, "accuracies": list(p.accuracies)} for p in points]


def _write_json(path: Path, doc: dict[str, object]) -> None:
    from hwnas.files import write_atomic

    write_atomic(path, json.dumps(doc, indent=1))
    say(f"wrote {path}")


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
