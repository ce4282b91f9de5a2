"""`hwnas compress`: seed 003's loop — prune channels, fine-tune with distillation, check the
accuracy, prune further or stop at the tolerance — on a registered task (a bundled real model
and dataset) or on a model with a labelled data file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.cli.common import LazyChoices, check_writable, console, load, out, say, status, task_names
from hwnas.errors import DataError, HwnasError

if TYPE_CHECKING:
    from hwnas.compress.finetune import FinetuneConfig
    from hwnas.compress.loop import CompressResult, Step
    from hwnas.ir.graph import Graph
    from hwnas.tasks import Task


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds `hwnas compress` and its options; the task names come from the task registry."""
    s = sub.add_parser("compress", help="prune → fine-tune → check, until the accuracy tolerance", description=(
        "Prune a growing share of the channels (prune-channels), fine-tune after each step with knowledge "
        "distillation from the original model, check the accuracy on a validation part of the training data, "
        "and stop when it falls more than the tolerance below the original's; the last model within it is "
        "written. Give MODEL with --data FILE.npz (arrays x and y, optionally x_test and y_test), or --task "
        "(alias --subject) for a bundled real model and dataset. With --quantize BITS the result is then "
        "quantized (calibrated on the training data), fine-tuned quantization-aware and written as QDQ ONNX."))
    s.add_argument("model", type=Path, nargs="?", help="ONNX model (omit with --task)")
    s.add_argument("--data", type=Path, metavar="FILE.npz", help="labelled data: x (inputs), y (int labels)")
    s.add_argument("--task", "--subject", dest="task", choices=LazyChoices(task_names), metavar="NAME",
                   help="a registered task: %(choices)s (bundled model and data)")
    s.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.onnx")
    s.add_argument("--tolerance", type=float, default=1.0, help="accuracy loss allowed, in points (default: 1)")
    s.add_argument("--step", type=float, default=0.1, help="channel share pruned per step (default: 0.1)")
    s.add_argument("--max-ratio", type=float, default=0.9, help="stop at this share of channels (default: 0.9)")
    s.add_argument("--criterion", choices=("l1", "l2", "bn"), default="l1")
    s.add_argument("--policy", choices=("uniform", "sensitivity"), default="uniform")
    s.add_argument("--multiple", type=int, default=1,
                   help="round kept channel counts up to multiples of this (8 suits CPU kernels; default: 1)")
    s.add_argument("--epochs", type=float, default=2.0, help="fine-tuning epochs per step (default: 2)")
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--kd", type=float, default=0.5, help="distillation weight in [0, 1] (default: 0.5)")
    s.add_argument("--quantize", type=int, metavar="BITS", help="then quantize weights and activations to BITS")
    s.add_argument("--test-fraction", type=float, default=0.3,
                   help="share of --data held out for the report when it has no x_test (default: 0.3)")
    s.add_argument("--json", type=Path, metavar="FILE", help="also write the steps and figures as JSON")
    s.add_argument("--seed", type=int, default=0)
    return s


def run(args: argparse.Namespace) -> int:
    """Runs the loop (and the optional quantization), prints the steps, writes the model and JSON."""
    if (args.model is None) == (args.task is None):
        raise HwnasError("give either MODEL with --data FILE.npz, or --task NAME")
    if args.model is not None and args.data is None:
        raise HwnasError("MODEL needs --data FILE.npz (arrays x and y) to fine-tune and check accuracy on")
    checks = ((0 <= args.tolerance <= 100, f"--tolerance must be in [0, 100] points, not {args.tolerance}"),
              (0 < args.step < 1, f"--step must be in (0, 1), not {args.step}"),
              (0 < args.max_ratio < 1, f"--max-ratio must be in (0, 1), not {args.max_ratio}"),
              (0 <= args.kd <= 1, f"--kd must be in [0, 1], not {args.kd}"),
              (args.multiple >= 1, f"--multiple must be at least 1, not {args.multiple}"))
    for ok, message in checks:
        if not ok:
            raise HwnasError(message)
    if args.quantize is not None and not (2 <= args.quantize <= 8 or args.quantize == 16):
        raise HwnasError(f"--quantize must be 2 to 8 or 16 bits, not {args.quantize}")
    _check_outputs(args.output, args.json)
    # Imported once the arguments and outputs are known good: torch alone takes seconds.
    import torch

    from hwnas.compress.finetune import FinetuneConfig
    from hwnas.compress.loop import compress

    task = _task(args)
    try:
        config = FinetuneConfig(epochs=args.epochs, lr=args.lr, kd_alpha=args.kd, seed=args.seed)
    except ValueError as e:
        raise HwnasError(str(e)) from None
    torch.manual_seed(args.seed)
    progress = _Progress()
    with progress:
        result = compress(task, tolerance=args.tolerance / 100, step=args.step, max_ratio=args.max_ratio,
                          criterion=args.criterion, policy=args.policy, multiple=args.multiple,
                          finetune_config=config, on_step=progress.step, on_train=progress.train,
                          on_stage=progress.stage, on_note=progress.note)
    graph, report = result.graph, result.to_json()
    report["pruned_test"] = result.test
    calibrated = _quantize(graph, task, args.quantize, config) if args.quantize is not None else None
    # Every figure below is the written file's: emitted once, scored in onnxruntime, then written.
    from hwnas.backends.emit import emit_onnx
    from hwnas.tasks.evaluate import evaluate

    model = emit_onnx(graph)
    with status(f"scoring {args.output.name} on the test split"):
        written = evaluate(model, task, "test")
    report["test"] = written
    if calibrated is not None:
        report["quantized"] = {"bits": args.quantize, "test_calibrated": calibrated, "test": written}
        say(f"{args.quantize}-bit: test accuracy {calibrated:.2%} after calibration, {written:.2%} after "
            f"quantization-aware training (the QDQ model written, run in onnxruntime)")
    _print(result, written, args.quantize, args.output)
    _write(model.SerializeToString(), args.output, report, args.json)
    return 0


def _check_outputs(output: Path, json_path: Path | None) -> None:
    """Fails before any work unless both outputs can be written: a real file is created
    beside each and removed (a permission bit can say yes where the file system says no)."""
    from hwnas.errors import OutputError
    from hwnas.files import stage_file

    paths = [p for p in (output, json_path) if p is not None]
    for p in paths:
        check_writable(p)
    if json_path is not None and json_path.resolve() == output.resolve():
        raise OutputError(f"{output}: -o and --json name the same file")
    for p in paths:
        stage_file(p, b"").unlink()


def _task(args: argparse.Namespace) -> Task:
    from hwnas.tasks import load_task
    from hwnas.tasks.data import task_from_data

    if args.task is not None:
        try:
            with status(f"loading task {args.task}"):
                return load_task(args.task)
        except ValueError as e:
            raise HwnasError(str(e)) from None
    graph = load(args.model)
    try:
        return task_from_data(graph, args.data, test_fraction=args.test_fraction, seed=args.seed)
    except (OSError, ValueError) as e:
        raise DataError(f"{args.data}: {e}") from None


def _quantize(graph: Graph, task: Task, bits: int, config: FinetuneConfig) -> float:
    """Quantizes `graph` in place (calibrated on training inputs), fine-tunes it
    quantization-aware with distillation, and returns the test figure of its QDQ model
    right after calibration."""
    from hwnas.compress.finetune import finetune
    from hwnas.passes.quantize import prepare_layers, quantize_layers
    from hwnas.tasks import Metric
    from hwnas.tasks.evaluate import evaluate, predict

    with status(f"quantizing to {bits} bits"):
        # Weights built from constants become constants first; layers left float are named in a warning.
        nodes, _ = prepare_layers(graph, "compress --quantize")
        layers = {n.name: (bits, bits) for n in nodes}
        quantize_layers(graph, layers, calib={task.input_name: task.train[0][:256]}, samples=256)
    before = evaluate(graph, task, "test")  # as QDQ: evaluate runs a graph as emit_onnx writes it
    teacher = predict(task.graph, task, "train") if config.kd_alpha > 0 else None
    labels = task.train[1] if task.metric is Metric.ACCURACY else predict(task.graph, task, "train").argmax(1)
    with status("quantization-aware fine-tuning"):
        finetune(graph, (task.train[0], labels), config, teacher_logits=teacher)
    return before


def _print(result: CompressResult, written: float, bits: int | None, output: Path) -> None:
    """The steps as a table and the result in one line; `written` is the written file's figure."""
    from rich.table import Table

    t = Table(title="prune → fine-tune → check")
    for col in ("target", "channels pruned", "params", "MACs", "val. after pruning", "val. after fine-tuning", ""):
        t.add_column(col, justify="right")
    t.add_row("", "0%", f"{result.params[0]:,}", f"{result.macs[0]:,}", "", f"{result.baseline_val:.2%}", "original")
    for s in result.steps:
        t.add_row(f"{s.ratio:.0%}", f"{s.pruned:.1%}", f"{s.params:,}", f"{s.macs:,}", f"{s.val_pruned:.2%}",
                  f"{s.val:.2%}", "kept" if s.accepted else "over tolerance")
    out.print(t)
    accepted = [s for s in result.steps if s.accepted]
    pruned = accepted[-1].pruned if accepted else 0.0
    figure = (f"{result.test:.2%} pruned, {written:.2%} as written ({bits}-bit QDQ {output.name}, in onnxruntime)"
              if bits is not None else f"{written:.2%} ({output.name}, in onnxruntime)")
    out.print(f"result: {pruned:.1%} of channels pruned, params {result.params[0]:,} → {result.params[1]:,}, "
              f"MACs {result.macs[0]:,} → {result.macs[1]:,}; test accuracy {result.baseline_test:.2%} → {figure}",
              highlight=False, soft_wrap=True)


def _write(model: bytes, output: Path, report: dict, json_path: Path | None) -> None:
    from hwnas.files import stage_file

    # Both files are staged before either replaces its target, so a failure leaves neither half-written.
    staged = [(stage_file(output, model), output)]
    if json_path is not None:
        staged.append((stage_file(json_path, json.dumps(report, indent=2)), json_path))
    for tmp, final in staged:
        tmp.replace(final)
    say(f"wrote {output}" + (f" and {json_path}" if json_path else ""))


class _Progress:
    """A bar for each step's fine-tuning and a line for each finished step, on stderr."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[loss]}"),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task("starting", total=None, loss="")

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def stage(self, text: str) -> None:
        self.progress.update(self.task, description=text, completed=0, total=None, loss="")

    def train(self, step: int, steps: int, loss: float) -> None:
        self.progress.update(self.task, completed=step, total=steps, loss=f"loss {loss:.3f}")

    def note(self, text: str) -> None:
        self.progress.console.print(f"note: {text}", markup=False, highlight=False, soft_wrap=True)

    def step(self, s: Step) -> None:
        verdict = "kept" if s.accepted else "over tolerance, stopping"
        self.progress.console.print(f"pruned {s.ratio:.0%} ({s.pruned:.1%} of the channels): validation "
                                    f"{s.val_pruned:.2%} → {s.val:.2%} after "
                                    f"fine-tuning, params {s.params:,} ({verdict})", markup=False, highlight=False,
                                    soft_wrap=True)
