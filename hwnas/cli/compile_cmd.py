"""`hwnas compile MODEL --target T -o OUT`: the main job.

Parses its flags, calls `hwnas.compile.compile`, writes what it returns (the artifact at OUT,
the cost report beside it as OUT's stem + `.cost.json` and `.cost.html`, all or nothing) and
prints a summary with what does not fit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hwnas.cli.common import add_dims, check_writable, load, out, say, status
from hwnas.cli.opt_cmd import add_pipeline_flags, instruments_from_args


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `compile` and its flags to the subcommands."""
    s = sub.add_parser("compile", help="compile a model for a target: artifact + cost report", description=(
        "Run TARGET's default pipeline on MODEL, write the artifact the target runs to OUT (ONNX; a TVM "
        "library with --runtime tvm where the target names a TVM target; OUT/, a folder, on an MCU target: "
        "the int8 C project) and its cost report beside it (OUT.cost.json, OUT.cost.html)."))
    s.add_argument("model", type=Path)
    s.add_argument("-t", "--target", required=True, metavar="NAME|FILE.toml")
    s.add_argument("-o", "--output", required=True, metavar="OUT")  # a str: a trailing / asks for a folder
    s.add_argument("--runtime", choices=("onnxruntime", "tvm"), help="override the target's runtime")
    s.add_argument("--tune-trials", type=int, default=0, metavar="N",
                   help="tune a TVM library's kernels with MetaSchedule, up to N measured trials in all "
                        "(default 0: untuned, far slower than onnxruntime)")
    s.add_argument("--tune-dir", type=Path, metavar="DIR",
                   help="keep TVM's tuning records in DIR and apply those of earlier runs (then even with 0 trials)")
    s.add_argument("--passes", metavar="SPEC", help="run this pipeline instead of the target's")
    s.add_argument("--setting", metavar="NAME", help="price with this few-shot setting of the target's calibration")
    s.add_argument("--strict", action="store_true", help="exit with 1 when the model does not fit the target")
    s.add_argument("--force", action="store_true", help="write a C project whose arena exceeds the target's SRAM")
    s.add_argument("--requantize", choices=("fixed", "onnxruntime"), default="fixed",
                   help="the C project's rounding: fixed (CMSIS-NN's Q31 multipliers and shifts, default) or "
                        "onnxruntime (its CPU kernels' float rounding: outputs bit-equal to the QDQ model's; "
                        "soft float on an MCU without an FPU)")
    add_pipeline_flags(s)
    s.add_argument("--allow-random-calib", action="store_true",
                   help="calibrate on random inputs when the pipeline quantizes and no --calib-data is given "
                        "(otherwise refused: the int8 targets' pipelines quantize)")
    add_dims(s, "for the cost report and a random calibration (--allow-random-calib); the artifact keeps them symbolic")
    return s


def run(args: argparse.Namespace) -> int:
    """Compile, write, print; 1 with --strict when the model does not fit."""
    from hwnas.backends.target import load_target
    from hwnas.compile import resolve_runtime

    target = load_target(args.target)  # a wrong target or runtime is refused before the heavy imports
    runtime = resolve_runtime(target, args.runtime)
    from hwnas.backends.cost.report import format_bytes, format_joules, format_latency
    from hwnas.backends.measure.tvm_tune import UNTUNED_WARNING, check_trials
    from hwnas.backends.render import data_dependent_text, unpriced_text
    from hwnas.compile import check_calibration, compile, report_paths
    from hwnas.passes import load_plugin

    check_trials(args.tune_trials)
    c_project = args.output.endswith("/") or Path(args.output).is_dir()  # OUT/: the C project
    args.output = Path(args.output)
    for p in (*(() if c_project else (args.output,)), *report_paths(args.output)):
        check_writable(p)
    for plugin in args.plugin:
        load_plugin(plugin)
    calib = None if args.calib_data is None else str(args.calib_data)
    spec = target.compile.pipeline if args.passes is None else args.passes
    check_calibration(target, spec, calib, args.allow_random_calib)  # ... and missing calibration data
    graph = load(args.model, args.dims)
    instruments, finish = instruments_from_args(args, graph)
    with finish:
        result = compile(graph, target, pipeline=args.passes, runtime=args.runtime, instruments=instruments,
                         calib=calib, allow_random_calib=args.allow_random_calib, setting=args.setting,
                         source=str(args.model), tune_trials=args.tune_trials, c_project=c_project,
                         tune_dir=args.tune_dir, force=args.force, requantize=args.requantize, dims=args.dims)
    for note in result.notes:
        say(f"hwnas: {note}")
    if runtime == "tvm" and not args.tune_trials and args.tune_dir is None:
        say(f"hwnas: warning: {UNTUNED_WARNING}")
    elif runtime != "tvm" and (args.tune_trials or args.tune_dir is not None):
        say(f"hwnas: --tune-trials/--tune-dir unused (they tune TVM; the runtime is {runtime})")
    with status(f"writing {args.output}"):
        paths = result.write(args.output)

    report, g = result.report, result.graph
    provider = target.roofline.execution_provider if target.roofline is not None else ""
    runtime = f"{result.runtime}, figures assume {provider}" if provider else result.runtime
    out.print(f"{g.name} → {target.name} ({target.kind}, {result.artifact_format}, {runtime}); "
              f"pipeline '{result.pipeline}'; {len(g.nodes)} nodes", markup=False, highlight=False)
    out.print(f"  latency {format_latency(report)} ({report.method}), energy "
              f"{format_joules(report.energy_j)}, peak memory {format_bytes(report.peak_memory_bytes)}, "
              f"weights {format_bytes(report.weight_bytes)}", markup=False, highlight=False)
    if report.machine:
        out.print(f"  figures measured on {report.machine}", markup=False, highlight=False)
    if report.machine_warning:
        say(f"hwnas: warning: {report.machine_warning}")
    for name, r in report.resources.items():
        out.print(f"  {name}: {r.used:,.0f} of {r.available:,.0f} {r.unit}".rstrip(), markup=False, highlight=False)
    if result.c_project is not None:
        code = result.c_project
        out.print(f"  C project: arena {code.arena_bytes:,} B (cost model's activation peak {code.peak_bytes:,} B), "
                  f"weights and biases {code.weight_bytes:,} B", markup=False, highlight=False)
    if report.unpriced:
        out.print(f"  unpriced ops (not in the totals, so the latency is a lower bound): {unpriced_text(report)}",
                  markup=False)
    if report.data_dependent:
        out.print(f"  {data_dependent_text(report)}", markup=False, highlight=False)
    if report.fits:
        out.print("  fits the target", markup=False)
    else:
        out.print("  DOES NOT FIT: " + "; ".join(report.does_not_fit), markup=False, highlight=False)
    say("wrote " + ", ".join(map(str, paths)))
    return 1 if args.strict and not report.fits else 0
