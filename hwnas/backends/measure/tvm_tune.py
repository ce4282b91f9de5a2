"""Tune a Relax module with TVM's MetaSchedule for a trial budget, and apply what it found.

Untuned, TVM compiles every kernel with its default schedule, which on CPU ran 69–94× slower
than onnxruntime on SqueezeNet and ResNet-50: `UNTUNED_WARNING` says so where an untuned build
is measured or written. `tune(mod, target, trials)` runs MetaSchedule (`tune_relax`, up to
`trials` measured candidates over all tasks: its `max_trials_global`, which it may overshoot
by part of a round), then applies the best schedule found for each task
(`MetaScheduleApplyDatabase`); kernels it did not reach keep the default schedule.

Choices, for two shared cores:
- Candidates are sampled from each task's design space ("replay-trace"). MetaSchedule's
  evolutionary search ranks candidates with a learned cost model (xgboost, not a dependency);
  with the "random" model it ranks at random too, and its genetic rounds took 40-70 s each
  here before anything was measured.
- Candidates are built in this process (`_in_process_builder`): LocalBuilder starts a process per
  round, which imports TVM and its tensor intrinsics again (8-25 s a round here). They run in
  one runner process (LocalRunner), where a crash or a hang is caught.

MetaSchedule imports `tvm.s_tir.tensor_intrin`, whose TVMScript parser calls `inspect.stack()`
per function; with many modules loaded (torch) each call resolves every frame's module and the
import takes 24–46 s, long enough for a builder worker to hit its timeout. `fast_inspect_stack()`
replaces `inspect.stack` with a walk over the frames that reads each frame's line from
`linecache` without resolving modules; it is installed in this process while tuning and in the
runner worker (its `initializer`).
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
_LOGGER = "tvm.s_tir.meta_schedule"
MAX_TRIALS_PER_ITER = 64  # candidates measured per task and round (MetaSchedule's default)


@dataclass(frozen=True)
class Tuning:
    """What a MetaSchedule run did: trials measured (the budget, or a few more: MetaSchedule stops
    after the round that reaches it), tasks (distinct kernels) it tuned, the module's kernels and
    how many of them carry a tuned schedule, the wall-clock time it took, and with a tuning
    folder, the records found there before (applied with the new ones)."""

    budget: int
    trials: int
    tasks: int
    kernels: int
    tuned_kernels: int
    seconds: float
    cached: int = 0  # records found in tune_dir before this run
    tune_dir: str | None = None

    def note(self) -> str:
        """One line for the user: the budget, what it bought and how long it took."""
        cache = f" (+{self.cached} records from {self.tune_dir})" if self.tune_dir else ""
        return (f"TVM tuned with MetaSchedule: {self.trials} trials of {self.budget} budgeted{cache}, "
                f"{self.tuned_kernels} of {self.kernels} kernels tuned, {self.seconds:.1f} s")

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return {"budget": self.budget, "trials": self.trials, "tasks": self.tasks, "kernels": self.kernels,
                "tuned_kernels": self.tuned_kernels, "seconds": self.seconds, "cached": self.cached,
                "tune_dir": self.tune_dir}


def check_trials(trials: int) -> None:
    """Refuse a negative trial budget (0 means untuned)."""
    if trials < 0:
        raise MeasureError(f"--tune-trials must be 0 (untuned) or more (got {trials})")


def tune(mod: Any, target: Any, trials: int, *, cores: int | None = None, seed: int = 0,
         tune_dir: str | os.PathLike | None = None) -> tuple[Any, Tuning]:
    """Tune the Relax module `mod` for `target` (a tvm.target.Target) with up to `trials`
    measured candidates in all; returns the module with the tuned schedules applied (ready for
    `tvm.compile`) and what the run did. A CPU target that names no core count is tuned for
    `cores` (the threads the kernels will run on; default: every CPU this process may use), and
    the runner measures candidates on that many threads. MetaSchedule's log lines go to stderr
    (errors only), never to stdout. The work directory is temporary and removed after.

    With `tune_dir`, the tuning records live there (MetaSchedule's JSON database): records of
    earlier runs are applied and new trials add to them; `trials` 0 applies them only."""
    check_trials(trials)
    db_dir = _tune_dir(tune_dir)
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
                database = ms.database.JSONDatabase(work_dir=db_dir or work_dir)
                before = len(database.get_all_tuning_records())
                if trials:
                    # every task gets a first round before the gradient scheduler picks: a round
                    # of 64 (the default) on a budget of 16 would tune one kernel and leave the rest
                    per_iter = max(1, min(MAX_TRIALS_PER_ITER, trials // max(1, len(tasks))))
                    ms.relax_integration.tune_relax(
                        mod, {}, target, work_dir, max_trials_global=trials, num_trials_per_iter=per_iter,
                        builder=_in_process_builder(Path(work_dir) / "candidates"),
                        runner=ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S,
                                                     initializer=install_fast_inspect_stack),
                        database=database, cost_model="random", strategy="replay-trace", seed=seed)
                with target, database, tvm.transform.PassContext(opt_level=3):
                    mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            except Exception as e:  # TVMError, RuntimeError, TimeoutError from the workers, ...
                raise MeasureError(f"MetaSchedule tuning failed ({first_line(e)})") from None
            kernels = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
            tuned = [f for f in kernels if f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)]
            tuning = Tuning(trials, len(database.get_all_tuning_records()) - before, len(tasks), len(kernels),
                            len(tuned), time.perf_counter() - t0, before, db_dir)
    return mod, tuning


def _tune_dir(tune_dir: str | os.PathLike | None) -> str | None:
    """The tuning records' folder as a string, created if missing; refuses one that cannot be."""
    if tune_dir is None:
        return None
    path = Path(tune_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MeasureError(f"--tune-dir {path}: cannot use it as a folder ({e.strerror or e})") from None
    return str(path)


def _in_process_builder(artifacts: Path) -> Any:
    """A MetaSchedule builder that compiles each candidate in this process and writes it under
    ARTIFACTS. LocalBuilder starts a fresh process for every round, which imports TVM and its
    tensor intrinsics again: 8-25 s a round on two shared cores, more than the builds themselves.
    Building is TVM's compiler on a scheduled TIR module, not running it: the candidates still run
    in the runner's own process, where a crash or a hang is caught."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    artifacts.mkdir(parents=True, exist_ok=True)

    @derived_object
    class InProcessBuilder(PyBuilder):
        """LocalBuilder's build and export (`default_build`, `default_export`), in this process."""

        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for build_input in build_inputs:
                path = tempfile.mkdtemp(dir=artifacts)
                try:
                    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(build_input.mod)
                    rt_mod = tvm.tirx.build(mod, target=build_input.target)
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
    (DEBUG unless set): inside the block the level is ERROR and the handler writes to stderr.
    The logger's own handlers are set aside meanwhile (MetaSchedule's logging setup fails on a
    handler without a name) and put back after; the handlers tuning added (files in its removed
    work directory, one logger per task) are closed."""
    log = logging.getLogger(_LOGGER)
    level, handlers = log.level, list(log.handlers)
    log.setLevel(logging.ERROR)
    log.handlers = []
    before = {name: list(logger.handlers) for name, logger in _task_loggers()}
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler in log.handlers:
            handler.close()
        log.handlers = handlers
        log.setLevel(level)
        for name, logger in _task_loggers():
            for handler in [h for h in logger.handlers if h not in before.get(name, ())]:
                logger.removeHandler(handler)
                handler.close()


def _task_loggers() -> list[tuple[str, logging.Logger]]:
    """MetaSchedule's per-task loggers (it names them below its own)."""
    return [(name, logger) for name, logger in list(logging.root.manager.loggerDict.items())
            if name.startswith(_LOGGER + ".") and isinstance(logger, logging.Logger)]


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

