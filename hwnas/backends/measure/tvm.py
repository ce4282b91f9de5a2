"""Latency of an ONNX model compiled with TVM Relax: untuned (TVM's default schedules), or tuned
with MetaSchedule for a trial budget (`tune_trials`; see tvm_tune.py).

Before import, input shapes are fixed to those of the inputs and onnxruntime's basic graph
optimizations (constant folding, redundant-node removal; all standard ONNX ops) are applied
and saved back to ONNX: Relax's importer refuses shapes computed at run time, and this is what
makes real exported models import (see DEPENDENCIES.md).

Threads: TVM's CPU thread pool is global to the process and sized once, when first used, from
TVM_NUM_THREADS (unset: half the logical CPUs on x86, assuming hyper-threading), so on a 2-core
machine it could never run 2 threads. Importing this module therefore builds the pool at once
with a worker per CPU this process may use, unless TVM_NUM_THREADS is set (then the user's
choice stands) or something built the pool already. The variable is set only for that moment.
A consequence to know: TVM code in this process that never picks a thread count then runs on
every CPU rather than half. Each measurement picks its count with the runtime's own
`runtime.config_threadpool` and puts the previous count back after, in the mode where the
threads share this process's CPUs: TVM's default mode pins the calling thread to one core,
which would skew whatever runs after it on that thread (onnxruntime included).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import tvm

from hwnas.backends.measure import Measurement, as_model, check_counts, graph_inputs, random_inputs
from hwnas.backends.measure.tvm_tune import Tuning, check_trials, tune
from hwnas.backends.sessions import make_session, session_options
from hwnas.backends.target import Target
from hwnas.errors import MeasureError, first_line

_HOST_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))

# config_threadpool's affinity modes (src/runtime/threading_backend.h): every worker may run on
# any of the CPUs given; the default (1, "big cores") pins threads, the caller's among them.
_SHARE_ALL_CORES = -3


@dataclass
class TvmProgram:
    """A compiled model with its inputs already on the device: call `run()` to execute once."""

    vm: Any
    main: Any  # vm["main"], looked up once rather than in every timed run
    device: Any
    device_kind: str  # "cpu" or "cuda", as a Measurement names it
    args: list[Any]
    source: str  # what errors call the model
    tuning: Tuning | None = None  # what MetaSchedule did; None: untuned

    def run(self) -> Any:
        out = self.main(*self.args)
        self.device.sync()  # CUDA launches are asynchronous; on CPU this is free
        return out

    def outputs(self) -> list[np.ndarray]:
        return _numpy(self.run())


def tvm_target_of(target: str | Target) -> str:
    """The TVM target string: `target` itself, or the one a Target's file names (its
    `[compile] tvm_target`); refuses a target whose file names none. An LLVM target whose
    `mcpu` is "native" (as host-cpu's) gets this machine's CPU as LLVM names it (znver4,
    sapphirerapids, ...), so TVM uses the instructions the machine has."""
    if isinstance(target, Target):
        if not target.compile.tvm_target:
            raise MeasureError(f"target '{target.name}' names no TVM target (its file's [compile] tvm_target "
                               f"is empty)")
        target = target.compile.tvm_target
    if "native" not in target:
        return target
    try:
        spec = json.loads(target)
    except json.JSONDecodeError:
        return target  # a TVM target string; TVM says what is wrong with it
    if isinstance(spec, dict) and spec.get("kind") == "llvm" and spec.get("mcpu") == "native":
        spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
        return json.dumps(spec)
    return target


@dataclass(frozen=True)
class TvmBuild:
    """A compiled model: the Relax executable, its input names, the feeds whose shapes it was
    compiled for, and what tuning did (None: untuned)."""

    executable: Any
    names: list[str]
    feeds: dict[str, np.ndarray]
    tuning: Tuning | None = None


def compile_tvm(model: onnx.ModelProto | str | os.PathLike, *, target: str | Target = "llvm",
                inputs: dict[str, np.ndarray] | None = None, tune_trials: int = 0,
                cores: int | None = None, tune_dir: str | os.PathLike | None = None) -> TvmBuild:
    """Import and compile `model` for `target` (a TVM target string or a hwnas Target whose
    file names its TVM target). With `tune_trials` > 0, MetaSchedule first tunes the kernels
    with up to that many trials in all, for `cores` threads (default: every CPU this process may
    use); 0 compiles TVM's default schedules. With `tune_dir`, tuning records are kept there and
    those of earlier runs applied (then even with 0 trials)."""
    check_trials(tune_trials)
    target = tvm_target_of(target)
    proto, source = as_model(model)
    feeds = random_inputs(proto) if inputs is None else inputs
    tgt, _, _ = _target_and_device(target, source)
    prepared = _prepare(proto, source, feeds)
    from tvm.relax.frontend.onnx import from_onnx

    names = [vi.name for vi in graph_inputs(prepared)]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise MeasureError(f"{source}: no input given for {', '.join(missing)}")
    try:
        mod = from_onnx(prepared, shape_dict={n: list(feeds[n].shape) for n in names},
                        dtype_dict={n: str(feeds[n].dtype) for n in names}, keep_params_in_input=False)
    except Exception as e:  # the importer raises OpNotImplemented, ValueError, TVMError, ...
        raise MeasureError(f"{source}: TVM cannot import the model ({first_line(e)})") from None
    tuning = None
    if tune_trials or tune_dir is not None:
        try:
            mod, tuning = tune(mod, tgt, tune_trials, cores=cores, tune_dir=tune_dir)
        except MeasureError as e:
            raise MeasureError(f"{source}: {e}") from None
    try:
        return TvmBuild(tvm.compile(mod, target=tgt), names, feeds, tuning)
    except Exception as e:
        raise MeasureError(f"{source}: TVM cannot compile the model for {target} ({first_line(e)})") from None


def build_tvm(model: onnx.ModelProto | str | os.PathLike, *, target: str | Target = "llvm",
              inputs: dict[str, np.ndarray] | None = None, tune_trials: int = 0,
              cores: int | None = None, tune_dir: str | os.PathLike | None = None) -> TvmProgram:
    """Import, compile and load `model` for `target` ("llvm", "cuda", any TVM target string,
    or a hwnas Target whose file names one), tuned first with `tune_trials` > 0 (see
    `compile_tvm`)."""
    target = tvm_target_of(target)
    built = compile_tvm(model, target=target, inputs=inputs, tune_trials=tune_trials, cores=cores, tune_dir=tune_dir)
    source = as_model(model)[1]
    _, device, kind = _target_and_device(target, source)
    vm = tvm.relax.VirtualMachine(built.executable, device)
    args = [tvm.runtime.tensor(np.ascontiguousarray(built.feeds[n]), device=device) for n in built.names]
    return TvmProgram(vm, vm["main"], device, kind, args, source, built.tuning)


def export_tvm_library(model: onnx.ModelProto | str | os.PathLike, path: str | os.PathLike, *,
                       target: str | Target = "llvm", tune_trials: int = 0,
                       tune_dir: str | os.PathLike | None = None) -> Tuning | None:
    """Compile `model` (tuned first with `tune_trials` > 0, for every CPU this process may use)
    and write it as a shared library that `tvm.runtime.load_module` loads and
    `tvm.relax.VirtualMachine` runs; returns what tuning did (None: untuned). `tune_dir` keeps
    the tuning records (see `compile_tvm`)."""
    built = compile_tvm(model, target=target, tune_trials=tune_trials, tune_dir=tune_dir)
    try:
        built.executable.export_library(str(path))
    except Exception as e:
        raise MeasureError(f"{path}: TVM cannot write the library ({first_line(e)})") from None
    return built.tuning


def run_tvm(model: onnx.ModelProto | str | os.PathLike, inputs: dict[str, np.ndarray] | None = None, *,
            target: str | Target = "llvm") -> list[np.ndarray]:
    """The model's outputs under TVM, to compare with `run_onnxruntime`."""
    return build_tvm(model, target=target, inputs=inputs).outputs()


def measure_tvm(model: onnx.ModelProto | str | os.PathLike, *, target: str | Target = "llvm", threads: int = 1,
                warmup: int = 3, repeats: int = 10, inputs: dict[str, np.ndarray] | None = None,
                tune_trials: int = 0) -> Measurement:
    """Median and spread of `repeats` VM calls after `warmup`; compile (and tuning) time is not
    included. With `tune_trials` > 0 the kernels are tuned for `threads` threads first.

    Note: TVM's default (untuned) CPU schedules emit no parallel loops, so `threads` changes
    little until a model is tuned; the figure is still recorded with the count it ran under."""
    check_counts(threads=threads, warmup=warmup, repeats=repeats)
    return time_program(build_tvm(model, target=target, inputs=inputs, tune_trials=tune_trials, cores=threads),
                        threads=threads, warmup=warmup, repeats=repeats)


def time_program(program: TvmProgram, *, threads: int = 1, warmup: int = 3, repeats: int = 10) -> Measurement:
    """Median and spread of `repeats` calls of a built program after `warmup`, on `threads` threads."""
    check_counts(threads=threads, warmup=warmup, repeats=repeats)
    times = []
    with cpu_threads(threads):
        try:
            for _ in range(warmup):
                program.run()
            for _ in range(repeats):
                t0 = time.perf_counter()
                program.run()
                times.append(time.perf_counter() - t0)
        except Exception as e:  # TVM's runtime errors come as TVMError, RuntimeError, ValueError, ...
            raise MeasureError(f"{program.source}: TVM cannot run the model ({first_line(e)})") from None
    return Measurement("tvm", program.device_kind, threads, warmup, repeats, tuple(times), {})


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run TVM's CPU kernels on `threads` threads inside the block, then restore the previous count."""
    configure = tvm.get_global_func("runtime.config_threadpool")
    before = tvm.runtime.num_threads()
    cpus = [str(c) for c in _HOST_CPUS]
    configure(_SHARE_ALL_CORES, threads, cpus)
    got = tvm.runtime.num_threads()
    if got != threads:
        configure(_SHARE_ALL_CORES, before, cpus)
        raise MeasureError(f"TVM's thread pool has {got} thread(s), {threads} asked: its size is fixed when it is "
                           f"first used; set TVM_NUM_THREADS={threads} before anything in this process runs TVM")
    try:
        yield
    finally:
        configure(_SHARE_ALL_CORES, before, cpus)


def _size_thread_pool() -> None:
    """Create TVM's thread pool now with a worker per CPU, unless something already has or the user
    chose with TVM_NUM_THREADS; the variable is set only while the pool reads it, so child
    processes (MetaSchedule's workers, say) do not inherit it."""
    if "TVM_NUM_THREADS" in os.environ:
        return
    os.environ["TVM_NUM_THREADS"] = str(len(_HOST_CPUS))
    try:
        tvm.runtime.num_threads()  # the pool is built on first use
    finally:
        del os.environ["TVM_NUM_THREADS"]


def _target_and_device(target: str, source: str) -> tuple[tvm.target.Target, Any, str]:
    try:
        tgt = tvm.target.Target(target)
    except Exception as e:
        raise MeasureError(f"{source}: '{target}' is not a TVM target ({first_line(e)})") from None
    kind = tgt.kind.name
    if kind in ("llvm", "c"):
        return tgt, tvm.cpu(0), "cpu"
    device = tvm.device(kind, 0)
    if not device.exist:
        raise MeasureError(f"{source}: no {kind} device on this machine for target '{target}'")
    return tvm.target.Target(tgt, host="llvm"), device, kind


def _prepare(proto: onnx.ModelProto, source: str, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Input shapes fixed to the feeds', then onnxruntime's basic optimizations, saved as ONNX."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for vi in graph_inputs(fixed):
        if vi.name in feeds and vi.type.HasField("tensor_type"):
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for d in feeds[vi.name].shape:
                shape.dim.add().dim_value = d
    with tempfile.TemporaryDirectory(prefix="hwnas-tvm-") as tmp:
        path = os.path.join(tmp, "basic.onnx")
        make_session(fixed, source, session_options(optimization="basic", optimized_path=path))
        return onnx.load(path)


def _numpy(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [a for item in out for a in _numpy(item)]


_size_thread_pool()  # at import: before anything in this process runs a TVM kernel and builds a smaller pool
