"""`hwnas measure MODEL`: real latency on this machine, with onnxruntime and/or TVM."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import JustifyMethod
from rich.table import Table

from hwnas.cli.common import add_dims, bind_named, load, out, say, status
from hwnas.errors import MeasureError

if TYPE_CHECKING:
    from hwnas.backends.measure import Measurement
    from hwnas.backends.target import Target
    from hwnas.ir.dims import Sizes
    from hwnas.ir.graph import Graph, Node

RUNTIMES = ("onnxruntime", "tvm", "both")
TOP_NODES = 15


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("measure", help="measure latency with onnxruntime and/or TVM", description=(
        "Run MODEL (an ONNX file or an hwnas .json/.hwnas dump) with random inputs (symbolic dims as --dims gives "
        "them, else 1), or with the arrays of --inputs, "
        "and report the median wall-clock latency and its spread. onnxruntime runs with all graph "
        "optimizations; TVM compiles with its default (untuned) schedules, or tunes them with MetaSchedule "
        "first (--tune-trials); compile and tuning time excluded."))
    s.add_argument("model", type=Path)
    s.add_argument("--target", default="host-cpu", help="host-cpu (default), or a GPU target: h100, jetson-orin")
    s.add_argument("--runtime", choices=RUNTIMES,
                   help="default: the target's ([compile] runtime in its file; onnxruntime for the shipped ones)")
    s.add_argument("--threads", type=int, default=1, help="threads inside each op (default: 1)")
    s.add_argument("--warmup", type=int, help="untimed runs first (default: onnxruntime 10, tvm 3)")
    s.add_argument("--repeats", type=int, help="timed runs (default: onnxruntime 50, tvm 10)")
    s.add_argument("--tune-trials", type=int, default=0, metavar="N",
                   help="tune TVM's kernels with MetaSchedule, up to N measured trials in all, for --threads "
                        "threads (default 0: untuned, far slower than onnxruntime)")
    s.add_argument("--tune-dir", type=Path, metavar="DIR",
                   help="keep TVM's tuning records in DIR and apply those of earlier runs (then even with 0 trials)")
    s.add_argument("--per-node", action="store_true", help="also the slowest nodes, from onnxruntime's profiler")
    s.add_argument("--json", action="store_true", help="print JSON to standard output instead of tables")
    s.add_argument("--inputs", type=Path, metavar="FILE.npz",
                   help="time on these arrays, one per model input by name (their shapes set the symbolic dims), "
                        "instead of random ones: an op whose time depends on the values (PRelu) is then timed "
                        "on the data it meets")
    add_dims(s, "the random inputs' sizes")
    return s


def _device_for_target(target: Target) -> str:
    """The device this machine measures a target on: its CPU for host-cpu, a CUDA GPU for
    GPU targets (the measurement then fails in one line where there is none)."""
    if target.kind == "gpu":
        return "cuda"
    if target.name == "host-cpu":
        return "cpu"
    raise MeasureError(f"target '{target.name}' ({target.kind}) is not this machine: measure on host-cpu, "
                       f"or on a GPU target where a CUDA GPU is present")


def run(args: argparse.Namespace) -> int:
    from hwnas.backends.emit.onnx import to_onnx
    from hwnas.backends.target import load_target

    _check_flags(args)
    target = load_target(args.target)
    device = _device_for_target(target)
    runtimes = _runtimes(target, args.runtime)
    from hwnas.passes.bind_dims import symbolic_inputs

    arrays = feeds = None
    dims = args.dims  # --dims, with the shapes of --inputs' arrays added (the caller's args stay as given)
    if args.inputs is not None:
        from hwnas.backends.measure import load_npz

        arrays = load_npz(args.inputs)
        shapes: Sizes = {k: tuple(a.shape) for k, a in arrays.items() if a.ndim}
        clash = [k for k, v in dims.items() if k in shapes and shapes[k] != v]
        if clash:
            raise MeasureError(f"--dims {clash[0]} and the array of that name in {args.inputs} differ in shape")
        dims = {**dims, **shapes}
    graph = load(args.model, dims)
    if arrays is not None:
        from hwnas.backends.measure import read_inputs

        feeds = read_inputs(arrays, graph, f"inputs '{args.inputs}'")
    graph = bind_named(graph, dims)
    rest = symbolic_inputs(graph)
    if rest:
        say(f"hwnas: random inputs with symbolic dims set to 1: {', '.join(rest)} (give their sizes with "
            f"--dims NAME=SIZE,...)")
    model = to_onnx(graph)
    model.graph.name = str(args.model)  # the runtimes' errors name the model by its graph's name
    if feeds is None:
        _say_data_dependence(graph, target)
    _say_tuning(runtimes, args.tune_trials, args.tune_dir)
    results: list[Measurement] = []
    tuning: dict[str, dict[str, object]] = {}
    for runtime in runtimes:
        counts = {k: v for k, v in (("warmup", args.warmup), ("repeats", args.repeats)) if v is not None}
        if runtime == "onnxruntime":
            from hwnas.backends.measure.onnxruntime import measure_onnxruntime

            with status(f"measuring {args.model} with onnxruntime on {device}"):
                results.append(measure_onnxruntime(model, threads=args.threads, device=device,
                                                   profile=args.per_node, inputs=feeds, **counts))
        else:
            from hwnas.backends.measure.tvm import build_tvm, time_program

            # The TVM target comes from the target's file ([compile] tvm_target).
            tuned = f"tuning ({args.tune_trials} trials) and " if args.tune_trials else ""
            with status(f"{tuned}compiling {args.model} with tvm for {device}"):
                program = build_tvm(model, target=target, inputs=feeds, tune_trials=args.tune_trials,
                                    cores=args.threads, tune_dir=args.tune_dir)
            if program.tuning is not None:
                say(f"hwnas: {program.tuning.note()}")
                tuning["tvm"] = program.tuning.to_json()
            with status(f"measuring {args.model} with tvm on {device}"):
                results.append(time_program(program, threads=args.threads, **counts))
    if args.json:
        doc = {"model": str(args.model), "target": args.target,
               "measurements": [{**m.to_json(), **({"tuning": tuning[m.runtime]} if m.runtime in tuning else {})}
                                for m in results]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    _print_summary(args, results)
    if args.per_node:
        _print_nodes(graph, results)
    return 0


def _say_data_dependence(graph: Graph, target: Target) -> None:
    """One line when the target's cost model knows ops of the graph whose time depends on the
    input's values: random inputs then time a case the model may never meet."""
    from hwnas.backends.cost import estimate
    from hwnas.backends.render import data_dependent_text
    from hwnas.errors import HwnasError
    from hwnas.passes.bind_dims import bound_copy

    try:
        report = estimate(bound_copy(graph), target)  # symbolic dims at 1, as the random inputs have them
    except HwnasError:
        return
    if report.data_dependent:
        say(f"hwnas: timed on random inputs; {data_dependent_text(report)}; give real inputs with --inputs FILE.npz")


def _runtimes(target: Target, flag: str | None) -> tuple[str, ...]:
    """The runtimes to measure with: the flag's, else the target's own (its file's [compile]
    runtime); TVM builds for the TVM target the file names ([compile] tvm_target)."""
    chosen = flag or target.compile.runtime
    runtimes = ("onnxruntime", "tvm") if chosen == "both" else (chosen,)
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise MeasureError(f"target '{target.name}': cannot measure with runtime '{runtime}' "
                               f"(hwnas measures with onnxruntime or tvm)")
    if "tvm" in runtimes and not target.compile.tvm_target:
        raise MeasureError(f"target '{target.name}' names no TVM target (its file's [compile] tvm_target is empty)")
    return runtimes


def _say_tuning(runtimes: tuple[str, ...], trials: int, tune_dir: Path | None) -> None:
    """One warning when TVM runs untuned; one line when --tune-trials/--tune-dir have nothing to tune."""
    from hwnas.backends.measure.tvm_tune import UNTUNED_WARNING

    if "tvm" not in runtimes:
        flags = " and ".join(f for f, given in (("--tune-trials", trials), ("--tune-dir", tune_dir)) if given)
        if flags:
            say(f"hwnas: {flags} unused (they tune TVM; this measures with onnxruntime only)")
    elif not trials and tune_dir is None:
        say(f"hwnas: warning: {UNTUNED_WARNING}")


def _check_flags(args: argparse.Namespace) -> None:
    from hwnas.backends.measure.tvm_tune import check_trials

    check_trials(args.tune_trials)
    if args.threads < 1:
        raise MeasureError(f"--threads must be at least 1 (got {args.threads})")
    if args.warmup is not None and args.warmup < 0:
        raise MeasureError(f"--warmup must be 0 or more (got {args.warmup})")
    if args.repeats is not None and args.repeats < 1:
        raise MeasureError(f"--repeats must be at least 1 (got {args.repeats})")


def _print_summary(args: argparse.Namespace, results: list[Measurement]) -> None:
    table = Table(title=f"{args.model.name} on {args.target}")
    _add_columns(table, (("runtime", "left"), ("device", "left"), ("threads", "right"), ("runs", "right"),
                         ("median ms", "right"), ("p10 ms", "right"), ("p90 ms", "right"), ("spread", "right")))
    for m in results:
        table.add_row(m.runtime, m.device, str(m.threads), str(m.repeats), f"{m.median_s * 1e3:.3f}",
                      f"{m.p10_s * 1e3:.3f}", f"{m.p90_s * 1e3:.3f}", f"{m.spread:.1%}")
    out.print(table)
    if any(m.spread > 0.2 for m in results):
        out.print("spread above 20%: the machine was busy or the runs too short; the medians are rough")


def _print_nodes(graph: Graph, results: list[Measurement]) -> None:
    ops = {n.name: n.op for n in graph.nodes}
    # ORT names an NCHWc kernel after the output it computes: the chain of the model's nodes
    # that ends there (a Conv and the BatchNormalization and activation fused into it).
    for n in graph.nodes:
        for v in n.outputs:
            ops.setdefault(f"{v.name}_nchwc", f"{_chain(n)} (NCHWc kernel)")
    for m in results:
        if not m.per_node_s:
            out.print(f"{m.runtime}: no per-node times (they come from onnxruntime's profiler)")
            continue
        total = sum(m.per_node_s.values())
        table = Table(title=f"slowest nodes, {m.runtime} (median per run; names after onnxruntime's fusions)")
        _add_columns(table, (("node", "left"), ("op", "left"), ("ms", "right"), ("share", "right")))
        ranked = sorted(m.per_node_s.items(), key=lambda kv: kv[1], reverse=True)
        for name, secs in ranked[:TOP_NODES]:
            table.add_row(name, _op_of(name, ops), f"{secs * 1e3:.3f}", f"{secs / total:.1%}" if total else "-")
        if len(ranked) > TOP_NODES:
            rest = sum(s for _, s in ranked[TOP_NODES:])
            table.add_row(f"({len(ranked) - TOP_NODES} more)", "", f"{rest * 1e3:.3f}",
                          f"{rest / total:.1%}" if total else "-")
        table.add_section()
        table.add_row("total", f"{len(ranked)} kernels", f"{total * 1e3:.3f}", "100.0%" if total else "-")
        out.print(table)


def _add_columns(table: Table, columns: Sequence[tuple[str, JustifyMethod]]) -> None:
    for name, justify in columns:
        table.add_column(name, justify=justify)


def _chain(node: Node, limit: int = 4) -> str:
    """'Conv+BatchNormalization+Relu': NODE and the ops before it back to a Conv, through the
    BatchNormalization, Add and activations onnxruntime fuses into a Conv's NCHWc kernel; NODE's
    op alone when it is no such chain's end (an NCHWc pooling)."""
    from hwnas.calibrate.fusion import ACTIVATIONS

    chain = [node]
    while chain[-1].op in (*ACTIVATIONS, "BatchNormalization", "Add") and len(chain) < limit:
        x = chain[-1].input(0)
        if x is None or x.producer is None:
            break
        chain.append(x.producer)
    return "+".join(n.op for n in reversed(chain)) if chain[-1].op == "Conv" else node.op


def _op_of(name: str, ops: dict[str, str]) -> str:
    """The op of an ORT kernel: the model's node of that name, or what ORT made of it."""
    if name in ops:
        return ops[name]
    head, _, fusion = name.rpartition("/")
    if head in ops and fusion:
        return f"{ops[head]} ({fusion})"  # ORT names a fusion after its first node
    if name.endswith("_nchwc"):
        return "NCHWc kernel (fused)"  # an output the model does not name (one of ORT's own)
    if name.startswith("Reorder"):
        return "layout reorder"
    return "onnxruntime's own"
