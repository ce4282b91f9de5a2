"""`hwnas calibrate --target host-cpu`: fit a latency predictor to this machine, or refit it
few-shot to a changed setting from a few whole-model measurements."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hwnas.cli.common import check_writable, load, say, status
from hwnas.errors import HwnasError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("calibrate", help="fit a latency predictor to this machine's CPU", description=(
        "Measure single-kernel ONNX models (convolutions, depthwise, 1-D and rectangular ones among them, gemm, "
        "pooling, element-wise ops with PRelu, data movement, softmax, reductions over the last or an inner "
        "axis; int8 convolutions, depthwise, gemm and residual adds as hwnas's quantize pass and QDQ "
        "emission make them, and as onnxruntime's quantize_dynamic writes them (ConvInteger, MatMulInteger); LSTM, "
        "GRU and DynamicQuantizeLSTM layers) with onnxruntime on this machine and fit one predictor per kernel "
        "kind, for `estimate` to use instead of the roofline. Samples go to the calibration file as they are "
        "measured: run again to continue an interrupted calibration. With --few-shot, refit an existing "
        "calibration to another setting (such as --threads 2) from a few measured models instead."))
    s.add_argument("--target", default="host-cpu",
                   help="host-cpu (default), or a CPU target file of your own describing this machine")
    s.add_argument("--samples", type=int, default=3000,
                   help="kernels to measure (default: 3000, a quarter of them int8 and recurrent: 1.4x as long as "
                        "3000 float kernels alone took: 9.4 min on a 2-core AMD EPYC shared at load 7, where "
                        "1000 took 188 s, and 22 min at load 12, where they took 433 s; the progress bar shows the "
                        "time left, and the command says how long it took)")
    s.add_argument("--networks", type=int, default=120,
                   help="whole networks of hwnas's search spaces to profile between the kernels (default: 120, about "
                        "2 min), from which the predictor learns how kernels run inside a network rather than alone; "
                        "0: price kernels as measured alone")
    s.add_argument("--families", metavar="FAMILY,...",
                   help="measure only these kernel families of the first --samples (conv, depthwise, gemm, pool, "
                        "elementwise, movement, other, conv_int8, depthwise_int8, gemm_int8, add_int8, recurrent)")
    s.add_argument("--threads", type=int, default=1, help="onnxruntime threads inside each op (default: 1)")
    s.add_argument("--seed", type=int, default=0, help="which kernels are sampled (default: 0)")
    s.add_argument("--out", type=Path, help="calibration file (default: beside the target; see hwnas.backends."
                                            "calibrate.calibration_path)")
    s.add_argument("--few-shot", metavar="MODEL1,MODEL2,...",
                   help="refit the existing calibration from these models, measured here with --threads")
    s.add_argument("--setting", help="name of the refitted setting (default: threadsN)")
    s.add_argument("--roofline", action="store_true",
                   help="measure host-cpu's roofline again now (a few seconds; it is otherwise measured once per CPU, "
                        "--threads and onnxruntime version and cached in ~/.cache/hwnas/host/) and print it")
    return s


def run(args: argparse.Namespace) -> int:
    from hwnas.backends.target import load_target
    from hwnas.calibrate import CalibrationError, calibration_path, check_calibratable
    from hwnas.calibrate.kernels import FAMILIES

    if args.roofline:
        return _roofline(args)
    target = load_target(args.target)
    check_calibratable(target)
    if args.samples < 1:
        raise CalibrationError(f"--samples must be at least 1 (got {args.samples})")
    if args.threads < 1:
        raise CalibrationError(f"--threads must be at least 1 (got {args.threads})")
    if args.networks < 0:
        raise CalibrationError(f"--networks must be 0 or more (got {args.networks})")
    families = tuple(f.strip() for f in args.families.split(",") if f.strip()) if args.families else None
    unknown = sorted(set(families or ()) - set(FAMILIES))
    if unknown:
        raise CalibrationError(f"--families: unknown kernel family {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    if args.setting is not None and args.few_shot is None:
        raise CalibrationError("--setting names a few-shot refit: give the models with --few-shot")
    path = args.out or calibration_path(target)
    if args.out is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    check_writable(path)
    if args.few_shot is not None:
        return _few_shot(args, target, path)
    from hwnas.calibrate import calibrate

    t0 = time.perf_counter()
    load_before = _load_average()
    cal = calibrate(target, path, samples=args.samples, threads=args.threads, seed=args.seed, families=families,
                    networks=args.networks)
    nets = len(cal.networks)
    say(f"calibrated {target.name}: {len(cal.samples)} kernels and {nets} network{'s' if nets != 1 else ''} "
        f"({args.threads} thread{'s' if args.threads > 1 else ''}) in {elapsed(time.perf_counter() - t0)} -> {path}")
    # The load average after the run counts the calibration's own threads: others' load is the rest.
    _warn_if_busy(max(load_before, _load_average() - args.threads), "kernel times", args.threads)
    return 0


def _load_average() -> float:
    """The 1-minute load average (0 where the system does not tell)."""
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _warn_if_busy(load: float, what: str, threads: int = 1) -> None:
    """Say so when other work held the cores while this machine was measured: a calibration timed
    on a busy machine prices every model too high or too low (the latency-predictor benchmark's
    calibration under a CI run scored 23% of models within 10%, one on the quiet machine 57%)."""
    import os

    cores = os.cpu_count() or 1
    if load > max(cores / 2, threads):
        say(f"hwnas: the machine was busy (load average {load:.1f} on {cores} cores): the {what} are not this "
            f"machine's own; run again when it is idle")


def _roofline(args: argparse.Namespace) -> int:
    from hwnas.backends.cost.report import format_bytes
    from hwnas.backends.host import cache_path, host_roofline

    if args.threads < 1:
        raise HwnasError(f"--threads must be at least 1 (got {args.threads})")
    if args.few_shot is not None or args.setting is not None or args.out is not None:
        raise HwnasError("--roofline measures host-cpu's roofline only: it takes --threads, not --few-shot, "
                         "--setting or --out")
    with status(f"measuring this machine's roofline ({args.threads} thread{'s' if args.threads > 1 else ''})"):
        r = host_roofline(args.threads, refresh=True)
    levels = ", ".join(f"{m.name} {format_bytes(m.size_bytes)} {m.bandwidth_bytes_per_s / 1e9:.0f} GB/s"
                       for m in r.memory)
    say(f"roofline of {r.machine} ({r.threads} thread{'s' if r.threads > 1 else ''}, onnxruntime {r.ort_version}): "
        f"fp32 {r.peak_ops_per_s['fp32'] / 1e9:.0f} GFLOP/s, int8 {r.peak_ops_per_s['int8'] / 1e9:.0f} GOP/s, "
        f"depthwise {100 * r.depthwise_efficiency:.0f}% of dense, kernel overhead {r.kernel_overhead_s * 1e6:.1f} us; "
        f"{levels} (in {elapsed(r.duration_s)}) -> {cache_path(r.threads)}")
    _warn_if_busy(r.load_average, "rates", r.threads)
    return 0


def elapsed(seconds: float) -> str:
    """A duration as people read it: 42 s, 6.6 min (396 s)."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def _few_shot(args: argparse.Namespace, target: object, path: Path) -> int:
    from hwnas.backends.emit.onnx import to_onnx
    from hwnas.backends.measure import measure_onnxruntime
    from hwnas.calibrate import CalibrationError, read_calibration, refit_few_shot, save_calibration
    from hwnas.passes import PassRunner, parse_pipeline

    if not path.is_file():
        raise CalibrationError(f"{path}: no calibration to refit; run 'hwnas calibrate' first")
    cal = read_calibration(path)
    names = [p for p in args.few_shot.split(",") if p]
    if not names:
        raise CalibrationError("--few-shot needs at least one model")
    t0 = time.perf_counter()
    graphs, measured = [], []
    for name in names:
        graph = PassRunner().run(parse_pipeline("canonicalize"), load(Path(name))).graph
        with status(f"measuring {name} ({args.threads} threads)"):
            m = measure_onnxruntime(to_onnx(graph), threads=args.threads)
        graphs.append(graph)
        measured.append(m.median_s)
    setting = args.setting or f"threads{args.threads}"
    try:
        refit = refit_few_shot(cal, graphs, measured, setting, target=target,  # type: ignore[arg-type]
                               note=f"{args.threads} threads; {len(graphs)} models")
    except ValueError as e:
        raise HwnasError(str(e)) from None
    save_calibration(refit, path)
    s = refit.settings[setting]
    scales = ", ".join(f"{g} x{v:.2f}" for g, v in sorted(s.scales.items()))
    say(f"setting '{setting}' from {len(graphs)} models: {scales}; +{s.per_kernel_s * 1e6:.2f} us per kernel "
        f"(in {elapsed(time.perf_counter() - t0)}) -> {path}")
    return 0
