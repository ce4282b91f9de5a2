"""Tune a Relax module with TVM's MetaSchedule for a trial budget, and apply what it found.

Untuned, TVM compiles every kernel with its default schedule, which on CPU ran 69–94× slower
than onnxruntime on SqueezeNet and ResNet-50: `UNTUNED_WARNING` says so where an untuned build
is measured or written. `tune(mod, target, trials)` runs MetaSchedule (`tune_relax`, up to
`trials` measured candidates over all tasks: its `max_trials_global`) with one builder and one
runner process (two shared cores stall a larger pool), then applies the best schedule found for
each task (`MetaScheduleApplyDatabase`); kernels it did not reach keep the default schedule.
The search's cost model is "random" (xgboost, MetaSchedule's default, is not a dependency).

MetaSchedule imports `tvm.s_tir.tensor_intrin`, whose TVMScript parser calls `inspect.stack()`
per function; with many modules loaded (torch) each call resolves every frame's module and the
import takes 24–46 s, long enough for a builder worker to hit its timeout. `fast_inspect_stack()`
replaces `inspect.stack` with a walk over the frames that reads each frame's line from
`linecache` without resolving modules; it is installed in this process while tuning and in the
builder and runner workers (their `initializer`).
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from hwnas.errors import MeasureError, first_line

UNTUNED_WARNING = ("TVM kernels are untuned (TVM's default schedules ran 69-94x slower than onnxruntime on "
                   "SqueezeNet and ResNet-50); tune with --tune-trials N (e.g. 64 for a small model, 1000+ for "
                   "ResNet-50)")

RUN_TIMEOUT_S = 60.0
MAX_TRIALS_PER_ITER = 64  # candidates measured per task and round (MetaSchedule's default)


@dataclass(frozen=True)
class Tuning:
    """What a MetaSchedule run did: trials measured (at most the budget), tasks (distinct kernels)
    found and how many got a tuned schedule, and the wall-clock time it took."""

    budget: int
    trials: int
    tasks: int
    tuned_tasks: int
    seconds: float

    def note(self) -> str:
        """One line for the user: the budget, what it bought and how long it took."""
        return (f"TVM tuned with MetaSchedule: {self.trials} trials of {self.budget} budgeted, "
                f"{self.tuned_tasks} of {self.tasks} kernels tuned, {self.seconds:.1f} s")

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return {"budget": self.budget, "trials": self.trials, "tasks": self.tasks,
                "tuned_tasks": self.tuned_tasks, "seconds": self.seconds}


def check_trials(trials: int) -> None:
    """Refuse a negative trial budget (0 means untuned)."""
    if trials < 0:
        raise MeasureError(f"--tune-trials must be 0 (untuned) or more (got {trials})")


def tune(mod: Any, target: Any, trials: int, *, cores: int | None = None, seed: int = 0) -> tuple[Any, Tuning]:
    """Tune the Relax module `mod` for `target` (a tvm.target.Target) with up to `trials`
    measured candidates in all; returns the module with the tuned schedules applied (ready for
    `tvm.compile`) and what the run did. A CPU target that names no core count is tuned for
    `cores` (the threads the kernels will run on; default: every CPU this process may use), and
    the runner measures candidates on that many threads. MetaSchedule's log lines go to stderr
    (errors only), never to stdout. The work directory is temporary and removed after."""
    check_trials(trials)
    import tvm
    from tvm import relax

    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if target.kind.name in ("llvm", "c") and "num-cores" not in target.attrs:
        target = tvm.target.Target({**target.export(), "num-cores": cores})
    t0 = time.perf_counter()
    with fast_inspect_stack(), _quiet_meta_schedule(), _env("TVM_NUM_THREADS", str(cores)):
        from tvm.s_tir import meta_schedule as ms

        with target:
            mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                            relax.transform.CanonicalizeBindings(),
                                            relax.pipeline.zero_pipeline()])(mod)
        with tempfile.TemporaryDirectory(prefix="hwnas-tvm-tune-") as work_dir:
            try:
                tasks = ms.relax_integration.extract_tasks(mod, target)
                # every task gets a first round before the gradient scheduler picks: a round of
                # 64 (the default) on a budget of 16 would tune one kernel and leave the rest
                per_iter = max(1, min(MAX_TRIALS_PER_ITER, trials // max(1, len(tasks))))
                database = ms.relax_integration.tune_relax(
                    mod, {}, target, work_dir, max_trials_global=trials, num_trials_per_iter=per_iter,
                    builder=_in_process_builder(Path(work_dir) / "candidates"),
                    runner=ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, initializer=install_fast_inspect_stack),
                    cost_model="random", strategy="replay-trace", seed=seed)
                with target, database, tvm.transform.PassContext(opt_level=3):
                    mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            except Exception as e:  # TVMError, RuntimeError, TimeoutError from the workers, ...
                raise MeasureError(f"MetaSchedule tuning failed ({first_line(e)})") from None
            tuning = Tuning(trials, len(database.get_all_tuning_records()), len(tasks),
                            _count_tuned(tasks, database), time.perf_counter() - t0)
    return mod, tuning


def _count_tuned(tasks: list[Any], database: Any) -> int:
    """How many of the extracted tasks the database holds a working schedule for."""
    n = 0
    for task in tasks:
        mod = task.dispatched[0]
        if database.has_workload(mod) and database.query_schedule(mod, task.target, task.task_name) is not None:
            n += 1
    return n


def _in_process_builder(artifacts: Path) -> Any:
    """A MetaSchedule builder that compiles each candidate in this process and writes it under
    ARTIFACTS. LocalBuilder starts a fresh process for every round, which imports TVM and its
    tensor intrinsics again: 8-25 s a round on two shared cores, more than the builds themselves.
    Building is TVM's compiler on a scheduled TIR module, not running it: the candidates still run
    in the runner's own process, where a crash or a hang is caught."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    from tvm.support.tar import tar

    artifacts.mkdir(parents=True, exist_ok=True)

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for build_input in build_inputs:
                path = tempfile.mkdtemp(dir=artifacts)
                try:
                    rt_mod = default_build(build_input.mod, build_input.target, None)
                    artifact = os.path.join(path, "candidate." + tar.output_format)
                    rt_mod.export_library(artifact, fcompile=tar)
                    results.append(BuilderResult(artifact, None))
                except Exception as e:  # a candidate TVM cannot compile is reported, not fatal
                    results.append(BuilderResult(None, f"in-process builder: {first_line(e)}"))
            return results

    return InProcessBuilder()


@contextlib.contextmanager
def _quiet_meta_schedule() -> Iterator[None]:
    """MetaSchedule logs every round to a console handler on sys.stdout at its logger's level
    (DEBUG unless set): inside the block the level is ERROR and the handler writes to stderr."""
    log = logging.getLogger("tvm.s_tir.meta_schedule")
    level, handlers = log.level, set(log.handlers)
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        log.setLevel(level)
        for handler in set(log.handlers) - handlers:  # those tuning added write to its removed work directory
            log.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Environment variable NAME is VALUE inside the block (for worker processes started there)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def install_fast_inspect_stack() -> None:
    """Replace `inspect.stack` in this process by `_fast_stack` (the builder and runner workers'
    initializer; harmless to call twice)."""
    inspect.stack = _fast_stack


@contextlib.contextmanager
def fast_inspect_stack() -> Iterator[None]:
    """`inspect.stack` is `_fast_stack` inside the block, and what it was after."""
    before = inspect.stack
    inspect.stack = _fast_stack
    try:
        yield
    finally:
        inspect.stack = before


def _fast_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """`inspect.stack()` without resolving each frame's module: file name, line number,
    function and `context` lines around the current one from `linecache`."""
    frames = []
    frame: FrameType | None = inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # not this function's own frame
    while frame is not None:
        code = frame.f_code
        lineno = frame.f_lineno or code.co_firstlineno
        lines: list[str] | None = None
        index: int | None = None
        if context > 0:
            start = max(1, lineno - (context - 1) // 2)
            lines = [linecache.getline(code.co_filename, n) for n in range(start, start + context)]
            index = lineno - start
        frames.append(inspect.FrameInfo(frame, code.co_filename, lineno, code.co_name, lines, index))
        frame = frame.f_back
    return frames

