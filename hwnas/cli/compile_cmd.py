"""`hwnas compile MODEL --target T -o OUT`: the main job.

Runs the target's default pipeline (named in its target file), writes the artifact the
target runs (an ONNX model; with `--runtime tvm` on host-cpu, a TVM shared library), the
cost report beside it as OUT's stem + `.cost.json` and `.cost.html`, and prints a summary
with what does not fit. Every file is produced before any is put in place, so a failure
leaves none behind.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hwnas.files import stage_file
from hwnas.cli.common import check_writable, load, out, say
from hwnas.cli.cost_cmd import price
from hwnas.cli.opt_cmd import add_pipeline_flags, run_pipeline
from hwnas.errors import TargetError

TVM_TARGETS = {"host-cpu": "llvm"}


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("compile", help="compile a model for a target: artifact + cost report", description=(
        "Run TARGET's default pipeline on MODEL, write the artifact the target runs to OUT (ONNX; a TVM "
        "library with --runtime tvm on host-cpu) and its cost report beside it (OUT.cost.json, OUT.cost.html)."))
    s.add_argument("model", type=Path)
    s.add_argument("-t", "--target", required=True, metavar="NAME|FILE.toml")
    s.add_argument("-o", "--output", required=True, type=Path, metavar="OUT")
    s.add_argument("--runtime", choices=("onnxruntime", "tvm"), help="override the target's runtime")
    s.add_argument("--passes", metavar="SPEC", help="run this pipeline instead of the target's")
    s.add_argument("--strict", action="store_true", help="exit with 1 when the model does not fit the target")
    add_pipeline_flags(s)
    return s


def report_paths(output: Path) -> tuple[Path, Path]:
    stem = output.with_suffix("") if output.suffix in (".onnx", ".so", ".tar") else output
    return stem.with_name(stem.name + ".cost.json"), stem.with_name(stem.name + ".cost.html")


def run(args: argparse.Namespace) -> int:
    from hwnas.backends.cost.report import format_bytes, format_joules, format_seconds
    from hwnas.backends.emit.onnx import to_onnx
    from hwnas.backends.render.html import render_html
    from hwnas.backends.target import load_target

    target = load_target(args.target)
    runtime = args.runtime or target.compile.runtime
    if runtime == "tvm" and target.name not in TVM_TARGETS:
        raise TargetError(f"--runtime tvm builds for {', '.join(TVM_TARGETS)} only, not '{target.name}'")
    json_path, html_path = report_paths(args.output)
    for p in (args.output, json_path, html_path):
        check_writable(p)
    graph = load(args.model)
    spec = target.compile.pipeline if args.passes is None else args.passes
    graph = run_pipeline(args, spec, graph).graph if spec else graph
    quantized = [n.ann.quant for n in graph.nodes if n.ann.quant is not None]
    if quantized:
        from hwnas.backends.emit.qdq import to_qdq_onnx

        target.check_integer_bits(sorted({b for q in quantized for b in (q.w_bits, q.a_bits) if b}))
    report = price(graph, [target])[target.name]
    model = to_qdq_onnx(graph) if quantized else to_onnx(graph)

    staged: list[tuple[Path, Path]] = []
    try:
        if runtime == "tvm":
            staged.append((_stage_tvm(model, args.output, TVM_TARGETS[target.name]), args.output))
        else:
            import onnx

            data = model.SerializeToString()
            onnx.checker.check_model(data, full_check=False)
            staged.append((stage_file(args.output, data), args.output))
        doc = {"model": str(args.model), "pipeline": spec, "runtime": runtime, **report.to_json()}
        staged.append((stage_file(json_path, json.dumps(doc, indent=1, allow_nan=False)), json_path))
        staged.append((stage_file(html_path, render_html(graph, report)), html_path))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)

    out.print(f"{graph.name} → {target.name} ({target.kind}, {runtime}); pipeline '{spec}'; "
              f"{len(graph.nodes)} nodes", markup=False, highlight=False)
    out.print(f"  latency {format_seconds(report.latency_s)} ({report.method}), energy "
              f"{format_joules(report.energy_j)}, peak memory {format_bytes(report.peak_memory_bytes)}, "
              f"weights {format_bytes(report.weight_bytes)}", markup=False, highlight=False)
    for name, r in report.resources.items():
        out.print(f"  {name}: {r.used:,.0f} of {r.available:,.0f} {r.unit}".rstrip(), markup=False, highlight=False)
    if report.unpriced:
        out.print("  unpriced ops (not in the totals): "
                  + ", ".join(f"{k} ×{v}" for k, v in sorted(report.unpriced.items())), markup=False)
    if report.fits:
        out.print("  fits the target", markup=False)
    else:
        out.print("  DOES NOT FIT: " + "; ".join(report.does_not_fit), markup=False, highlight=False)
    say(f"wrote {args.output}, {json_path}, {html_path}")
    return 1 if args.strict and not report.fits else 0


def _stage_tvm(model, path: Path, tvm_target: str) -> Path:  # noqa: ANN001
    from hwnas.backends.measure.tvm import export_tvm_library

    tmp = path.with_name(f".{path.name}.tmp.so")
    export_tvm_library(model, tmp, target=tvm_target)
    return tmp
