"""Compile a graph for a target: the main job, as a library call.

`compile(graph, target)` runs the target's pipeline (named in its TOML) on a copy of the
graph, emits the artifact the target's runtime runs (ONNX, QDQ ONNX when the pipeline
quantized the graph, or a TVM library), and prices the result on the target. For an analog
target the graph's weight layers are placed on crossbar tiles (`map-analog`, unless the pipeline
placed them), the report says which layers are analog and which digital, and the aihwkit model of
the graph (`hwnas.analog`) is written beside the artifact as OUT.aihwkit.pt. Pricing needs
numbers, so symbolic input dimensions are bound on a copy for the cost report only: the
artifact keeps them (a batch-dynamic model stays batch-dynamic). `Compiled.write(OUT)`
puts the artifact at OUT and its cost report beside it, all or nothing.

The `hwnas compile` command parses its flags, calls these, and prints the result, as
TVM's `tvmc` calls `compile_model`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.errors import DataError, TargetError
from hwnas.files import stage_file

if TYPE_CHECKING:
    import onnx

    from hwnas.backends.cost import CostReport
    from hwnas.backends.target import Target
    from hwnas.codegen import CProject
    from hwnas.ir.dims import Sizes
    from hwnas.ir.graph import Graph
    from hwnas.passes.base import Pass
    from hwnas.passes.instruments import Instrument

ARTIFACT_SUFFIXES = (".onnx", ".so", ".tar")


@dataclass(frozen=True)
class Priced:
    """A cost report and what was done to the graph to price it (said to the user)."""

    report: CostReport
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Compiled:
    """What `compile` produced: the graph after the pipeline, the artifact's bytes, the cost
    report of that graph on the target, the pipeline that ran (a spec that replays it) and
    notes on anything done beyond what was asked (symbolic dims bound for pricing, calibration
    data unused)."""

    graph: Graph
    target: Target
    pipeline: str
    runtime: str
    artifact: bytes
    report: CostReport
    notes: tuple[str, ...] = ()
    source: str = ""
    """Where the model came from (a path), recorded in the cost report."""
    c_project: CProject | None = None
    """The C project of the graph (an MCU target, `compile(c_project=True)`): `write` puts
    it in the folder OUT instead of the ONNX artifact."""
    analog_state: bytes | None = None
    """The aihwkit model's state (an analog target; `torch.save` of
    `hwnas.analog.convert.analog_state_dict`, read with `torch.load(..., weights_only=True)`):
    `write` puts it beside the artifact as OUT.aihwkit.pt."""

    def report_json(self) -> dict[str, object]:
        """The cost report as written to OUT.cost.json: model, the pipeline that ran, the
        artifact it prices (format, size, SHA-256, priced nodes per precision), what the
        target runs (`target_precision`), runtime, the execution provider the figures assume
        (cpu and gpu targets) and the costs."""
        import hashlib
        from collections import Counter

        roofline = self.target.roofline
        precisions = Counter(n.precision for n in self.report.nodes if n.precision)
        code = self.c_project
        extra = {} if code is None else {"c_project": {
            "files": sorted(code.files), "arena_bytes": code.arena_bytes, "peak_bytes": code.peak_bytes,
            "weight_bytes": code.weight_bytes, "input": [code.input.scale, code.input.zero_point],
            "output": [code.output.scale, code.output.zero_point]}}
        if self.target.kind == "analog":
            extra["analog_placement"] = analog_placement(self.graph)
        return {"model": self.source, "pipeline": self.pipeline,
                "artifact": {"format": self.artifact_format, "bytes": len(self.artifact),
                             "sha256": hashlib.sha256(self.artifact).hexdigest(), "precisions": dict(precisions)},
                "target_precision": self.target.compile.precision,
                "runtime": self.runtime,
                "execution_provider": (roofline.execution_provider or None) if roofline is not None else None,
                "notes": list(self.notes), **self.report.to_json(), **extra}

    @property
    def artifact_format(self) -> str:
        """"tvm-library", "c99-project", "qdq-onnx" (a quantized graph) or "onnx"."""
        from hwnas.backends.emit import is_quantized

        if self.runtime == "tvm":
            return "tvm-library"
        if self.c_project is not None:
            return "c99-project"
        return "qdq-onnx" if is_quantized(self.graph) else "onnx"

    def write(self, output: str | os.PathLike) -> tuple[Path, ...]:
        """Write the artifact to OUTPUT and the report beside it (OUT.cost.json, OUT.cost.html), and
        an analog target's aihwkit state (OUT.aihwkit.pt); returns the paths written. Every file is
        staged before any is moved into place, so a failure leaves none."""
        from hwnas.backends.render.html import render_html

        out = Path(output)
        json_path, html_path = report_paths(out)
        staged: list[tuple[Path, Path]] = []
        try:
            if self.c_project is None:
                staged.append((stage_file(out, self.artifact), out))
            text = json.dumps(self.report_json(), indent=1, allow_nan=False)
            staged.append((stage_file(json_path, text), json_path))
            staged.append((stage_file(html_path, render_html(self.graph, self.report)), html_path))
            if self.analog_state is not None:
                staged.append((stage_file(analog_state_path(out), self.analog_state), analog_state_path(out)))
            if self.c_project is not None:
                self.c_project.write(out)  # staged file by file itself
            for tmp, final in staged:
                os.replace(tmp, final)
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
        return (out, json_path, html_path) + ((analog_state_path(out),) if self.analog_state is not None else ())


def analog_state_path(output: Path) -> Path:
    """OUT.aihwkit.pt beside the artifact (OUT without its suffix): an analog target's aihwkit state."""
    stem = output.with_suffix("") if output.suffix in ARTIFACT_SUFFIXES else output
    return stem.with_name(stem.name + ".aihwkit.pt")


def analog_placement(graph: Graph) -> dict[str, object]:
    """Which weight layers `map-analog` put on crossbar tiles (with their tiles) and which it left
    on the digital core (with the reason), as the cost report's JSON holds them."""
    placed = [n for n in graph.nodes if n.ann.placement is not None]
    return {"analog": {n.name: {"op": n.op, "tiles": list(n.ann.placement.tile_ids)}
                       for n in placed if n.ann.placement is not None and n.ann.placement.analog},
            "digital": {n.name: {"op": n.op, "reason": n.ann.placement.reason}
                        for n in placed if n.ann.placement is not None and not n.ann.placement.analog}}


def report_paths(output: Path) -> tuple[Path, Path]:
    """OUT.cost.json and OUT.cost.html beside the artifact (OUT without its suffix)."""
    stem = output.with_suffix("") if output.suffix in ARTIFACT_SUFFIXES else output
    return stem.with_name(stem.name + ".cost.json"), stem.with_name(stem.name + ".cost.html")


def resolve_runtime(target: Target, runtime: str | None) -> str:
    """The runtime to build for (the target's unless given); refuses TVM where the target
    names no TVM target."""
    runtime = runtime or target.compile.runtime
    if runtime == "tvm" and not target.compile.tvm_target:
        from hwnas.backends.target import available_targets, load_target

        tvm = [t for t in available_targets() if load_target(t).compile.tvm_target]
        raise TargetError(f"--runtime tvm builds for {', '.join(tvm)} only, not '{target.name}' "
                          f"(its target file names no [compile] tvm_target)")
    if runtime not in ("onnxruntime", "tvm"):
        raise TargetError(f"target '{target.name}': unknown runtime '{runtime}' (expected onnxruntime or tvm)")
    return runtime


def compile(graph: Graph, target: Target | str | os.PathLike, *, pipeline: str | None = None,
            runtime: str | None = None, calib: str | None = None, allow_random_calib: bool = False,
            instruments: Sequence[Instrument] = (), setting: str | None = None, source: str = "",
            tune_trials: int = 0, c_project: bool = False, tune_dir: str | os.PathLike | None = None,
            force: bool = False, requantize: str = "fixed", dims: Sizes | None = None) -> Compiled:
    """Compile GRAPH for TARGET (a Target, a shipped target's name or a TOML path).

    `pipeline` replaces the target's pipeline ('' runs none); `runtime` its runtime;
    `calib` (an .npz of sample inputs) goes to every pass that takes calibration data and
    has none; without it such a pass is refused (DataError) unless `allow_random_calib`
    (random inputs, with a note). `instruments` watch the passes. `tune_trials` > 0 tunes a TVM
    library's kernels with MetaSchedule (up to that many trials; 0: TVM's default schedules);
    `tune_dir` keeps its tuning records and applies those of earlier runs.
    `c_project` also generates the int8 C project (MCU targets; `hwnas.codegen.generate_c`,
    its float output's grid calibrated on `calib`; an arena beyond the target's SRAM is refused
    unless `force`; `requantize` "fixed" rounds as CMSIS-NN, "onnxruntime" as onnxruntime's CPU
    kernels, bit for bit). `dims` sizes symbolic input dims for the price (`price`) and the C
    project (whose shapes are static); the ONNX or TVM artifact keeps them symbolic. The
    caller's graph is not changed; the report prices the graph the artifact holds."""
    from hwnas.backends.emit import emit_onnx, is_quantized
    from hwnas.backends.target import Target, load_target

    if not isinstance(target, Target):
        target = load_target(Path(target) if isinstance(target, os.PathLike) else target)
    runtime = resolve_runtime(target, runtime)
    if dims:
        from hwnas.passes.bind_dims import check_dims

        check_dims(graph, dims)
    if c_project:  # said before the pipeline's minutes of work
        from hwnas.codegen import check_io

        if target.kind != "mcu":
            raise TargetError(f"a C project (OUT a folder) is generated for MCU targets, not '{target.name}' "
                              f"({target.kind})")
        check_io(graph)
    spec = target.compile.pipeline if pipeline is None else pipeline
    notes = check_calibration(target, spec, calib, allow_random_calib)
    from hwnas.passes.quantize import RANDOM_DIMS, random_inputs

    token = RANDOM_DIMS.set(dims or None)  # a random calibration runs at the sizes the price uses
    try:
        ran = run_pipeline(graph.copy(), spec, calib=calib, instruments=instruments)
    finally:
        RANDOM_DIMS.reset(token)
    graph = ran.graph
    if target.kind == "analog" and not any(n.ann.placement is not None for n in graph.nodes):
        ran = _map_analog(ran, target, instruments)
        graph = ran.graph
    if is_quantized(graph):
        target.check_integer_bits(sorted({b for n in graph.nodes if n.ann.quant is not None
                                          for b in (n.ann.quant.w_bits, n.ann.quant.a_bits) if b}))
    elif target.compile.precision == "int8":
        notes += (f"target '{target.name}' runs int8 kernels, but pipeline '{ran.spec}' leaves the model float: "
                  f"the artifact and its price are float (its default pipeline is '{target.compile.pipeline}')",)
    if runtime == "tvm" and target.roofline is not None and target.roofline.execution_provider:
        notes += (f"the figures assume onnxruntime's {target.roofline.execution_provider}, not TVM's kernels",)
    if requantize not in ("fixed", "onnxruntime"):
        raise TargetError(f"requantize must be 'fixed' (CMSIS-NN's) or 'onnxruntime', not {requantize!r}")
    if requantize != "fixed" and not c_project:
        raise TargetError("requantize chooses the C project's rounding; give OUT as a folder (OUT/) for one")
    priced = price(graph, target, setting=setting, dims=dims)
    code = None
    if c_project:
        from hwnas.backends.target import MCU
        from hwnas.codegen import generate_c
        from hwnas.errors import CostError

        code = generate_c(graph, calib=calib or (random_inputs(graph, 0, dims) if allow_random_calib else None),
                          requantize="onnxruntime" if requantize == "onnxruntime" else "fixed", dims=dims)
        sram = target.section(MCU).sram_bytes
        if code.arena_bytes > sram and not force:
            raise CostError(f"model '{graph.name}': its arena of {code.arena_bytes:,} B (the peak of live "
                            f"activations) exceeds {target.name}'s SRAM of {sram:,.0f} B (--force writes it anyway)")
    model = emit_onnx(graph)
    state = _analog_state(graph, target) if target.kind == "analog" else None
    if runtime == "tvm":
        artifact, tuned = _tvm_library(model, target.compile.tvm_target, tune_trials, tune_dir)
        notes += tuned
    elif code is not None:  # the sources are the artifact (the report hashes them)
        artifact = b"".join(code.files[name].encode() for name in sorted(code.files))
    else:
        artifact = model.SerializeToString()
    return Compiled(graph, target, ran.spec, runtime, artifact, priced.report, (*notes, *ran.notes, *priced.notes),
                    source, code, state)


def _map_analog(ran: PipelineRun, target: Target, instruments: Sequence[Instrument]) -> PipelineRun:
    """The pipeline that ran, then `map-analog` with the target's tiles (it placed no layer itself),
    as one spec that replays both."""
    from hwnas.backends.target import available_targets, load_target
    from hwnas.passes.map_analog import MapAnalog

    shipped = target.path is None or (target.name in available_targets()
                                      and load_target(target.name).path == target.path)  # spelled by name
    placing = MapAnalog(target=target.name if shipped else str(target.path)).spec()
    mapped = run_pipeline(ran.graph, placing, instruments=instruments)
    return PipelineRun(mapped.graph, ",".join(p for p in (ran.spec, mapped.spec) if p), ran.changed or mapped.changed,
                       ran.notes)


def _analog_state(graph: Graph, target: Target) -> bytes:
    """The state of GRAPH on TARGET's aihwkit tiles (as placed, before programming), serialized by
    torch.save with only tensors and plain values (weights_only loads it)."""
    import io

    import torch

    from hwnas.analog.convert import analog_state_dict, to_analog

    buf = io.BytesIO()
    torch.save(analog_state_dict(to_analog(graph, target)), buf)
    return buf.getvalue()


def check_calibration(target: Target, spec: str, calib: str | None, allow_random: bool) -> tuple[str, ...]:
    """Refuses (DataError, one line) a pipeline whose calibrating passes (quantize ...) would
    get no sample inputs, unless `allow_random` (then a note says the ranges come from
    random inputs). A wrong spec fails here as it would when run."""
    from hwnas.passes import parse_pipeline

    if calib or not spec.strip():
        return ()
    missing = _uncalibrated(parse_pipeline(spec))
    if not missing:
        return ()
    passes = ", ".join(missing)
    if not allow_random:
        precision = "int8 " if target.compile.precision == "int8" else ""
        raise DataError(f"target '{target.name}': pipeline '{spec}' calibrates the {precision}model ({passes}) and "
                        f"no calibration data was given: pass --calib-data FILE.npz (sample inputs named by graph "
                        f"input), or --allow-random-calib to calibrate on random inputs")
    return (f"calibrated on random inputs ({passes}; --allow-random-calib): the activation ranges are not "
            f"those of real data",)


def _uncalibrated(p: Pass) -> list[str]:
    """Names of the passes in P that take calibration data (a `calib` option) and have none."""
    import dataclasses

    if any(f.name == "calib" for f in dataclasses.fields(p)):
        return [] if getattr(p, "calib", None) else [p.name]
    children = getattr(p, "passes", None)
    return [name for c in children for name in _uncalibrated(c)] if isinstance(children, tuple) else []


@dataclass(frozen=True)
class PipelineRun:
    """A pipeline that ran: the graph after it, the spec that ran (with calibration data
    filled in, so it replays), whether it changed the graph, and notes for the user."""

    graph: Graph
    spec: str
    changed: bool
    notes: tuple[str, ...] = ()


def run_pipeline(graph: Graph, spec: str, *, calib: str | None = None,
                 instruments: Sequence[Instrument] = ()) -> PipelineRun:
    """Run pipeline SPEC on GRAPH in place ('' runs nothing); `calib` goes to every pass
    that takes calibration data and has none."""
    from hwnas.passes import PassRunner, parse_pipeline
    from hwnas.passes.pipeline import with_calibration

    if not spec.strip():
        return PipelineRun(graph, "", False, (f"--calib-data {calib} is unused (no pipeline runs)",) if calib else ())
    p: Pass = parse_pipeline(spec)
    notes: tuple[str, ...] = ()
    if calib:
        p, used = with_calibration(p, calib)
        if not used:
            notes = (f"--calib-data {calib} is unused (no pass without calib= in '{spec}' takes it)",)
    result = PassRunner(instruments).run(p, graph)
    return PipelineRun(result.graph, p.spec(), result.changed, notes)


def price(graph: Graph, target: Target, *, setting: str | None = None,
          dims: Sizes | None = None) -> Priced:
    """GRAPH's cost on TARGET, with this machine's calibration of the target when there is
    one. Symbolic input dims are bound on a copy (costs need numbers): those named in `dims` to
    their sizes (a name no symbolic input dim has is an error), the others to 1, which the note
    says."""
    from hwnas.backends.cost import estimate
    from hwnas.calibrate import CalibrationError, calibration_path, load_calibration
    from hwnas.passes.bind_dims import bind, check_dims, fold_bound, symbolic_inputs

    notes: tuple[str, ...] = ()
    check_dims(graph, dims or {}, only_if_symbolic=True)
    if symbolic_inputs(graph):
        graph = graph.copy()
        bind(graph, dims or {}, value=None)
        rest = symbolic_inputs(graph)
        if rest:
            notes = (f"pricing with symbolic dims bound to 1: {', '.join(rest)} (give their sizes with --dims "
                     f"NAME=SIZE,...; a compiled artifact keeps them symbolic)",)
            bind(graph, {}, value=1)
        graph = fold_bound(graph)
    calibration = load_calibration(target, setting=setting)
    if calibration is None and setting is not None:
        raise CalibrationError(f"--setting {setting}: target '{target.name}' has no calibration here "
                               f"({calibration_path(target)}; run hwnas calibrate)")
    return Priced(estimate(graph, target, calibration), notes)


def _tvm_library(model: onnx.ModelProto, tvm_target: str, tune_trials: int = 0,
                 tune_dir: str | os.PathLike | None = None) -> tuple[bytes, tuple[str, ...]]:
    """A TVM shared library of MODEL for TVM target TVM_TARGET, as bytes, tuned with up to
    TUNE_TRIALS MetaSchedule trials (0: untuned) and the records in TUNE_DIR, and a note on the tuning."""
    from hwnas.backends.measure.tvm import export_tvm_library

    with tempfile.TemporaryDirectory(prefix="hwnas-tvm-") as tmp:
        path = Path(tmp) / "model.so"
        tuning = export_tvm_library(model, path, target=tvm_target, tune_trials=tune_trials, tune_dir=tune_dir)
        return path.read_bytes(), (tuning.note(),) if tuning is not None else ()
