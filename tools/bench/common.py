"""What every benchmark in tools/bench shares: its command line (`--quick`, `--out DIR`), the
machine it ran on, writing its JSON and Markdown, onnxruntime sessions, and side-by-side timing.

Side-by-side timing runs every variant in each round (`repeats` runs in turn, the order rotated
round by round), so drift on the machine (a neighbour's load, clock changes) touches all alike;
a speed-up is reported as the ratio of medians and as the spread of per-round ratios.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from hwnas.backends.measure import cpu_model
from hwnas.backends.sessions import make_session, session_options

RESULTS = Path(__file__).resolve().parent / "results"
"""Where the published figures live; `--out DIR` writes elsewhere (tests, trial runs)."""
VERSIONS = ("onnxruntime", "torch", "onnx", "numpy", "scipy")


def parser(doc: str | None, quick: str) -> argparse.ArgumentParser:
    """An argument parser with the module docstring as description, `--quick` (described by
    `quick`: what it cuts) and `--out DIR` (default tools/bench/results)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"a smoke run in well under a minute: {quick}")
    ap.add_argument("--out", type=Path, default=RESULTS, metavar="DIR",
                    help="folder for the results (default tools/bench/results)")
    return ap


def environment(**extra: Any) -> dict[str, Any]:
    """The machine and libraries a run used: CPU model, core counts, platform, Python, library
    versions and the date, plus `extra` (the threads a study timed with, say)."""
    versions: dict[str, str | None] = {}
    for pkg in VERSIONS:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "platform": platform.platform(), "python": sys.version.split()[0], **versions,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **extra}


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} as JSON")


def write_json(out: Path, name: str, doc: Mapping[str, Any]) -> Path:
    """Writes `doc` to OUT/NAME.json (numpy values as plain numbers) and returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
    return path


def write_markdown(out: Path, name: str, text: str) -> Path:
    """Writes `text` to OUT/NAME.md and returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.md"
    path.write_text(text)
    return path


def session(model: onnx.ModelProto, threads: int = 1, optimized_path: str | None = None,
            source: str = "benchmark model") -> ort.InferenceSession:
    """An onnxruntime session as the library makes them (`threads` inside each op, sequential,
    all optimizations), optionally writing onnxruntime's optimized graph to `optimized_path`."""
    return make_session(model, source, session_options(threads=threads, optimized_path=optimized_path))


@dataclass(frozen=True)
class Phase:
    """One kind of run timed side by side: a call per variant, each run `repeats` times a round
    after `warmup` untimed runs (first runs allocate and page in)."""

    calls: Sequence[Callable[[], object]]
    repeats: int
    warmup: int = 3


def time_rounds(phases: Mapping[str, Phase], rounds: int, rotate: bool = True) -> dict[str, list[np.ndarray]]:
    """Seconds of every timed run: for each phase, one (rounds, repeats) array per call. In each
    round the phases run in turn, and within a phase every call `repeats` times, the order of
    the calls rotated by one each round when `rotate`."""
    if rounds < 1 or any(p.repeats < 1 for p in phases.values()):
        raise ValueError("rounds and repeats must be at least 1")
    for p in phases.values():
        for call in p.calls:
            for _ in range(p.warmup):
                call()
    times = {k: [np.empty((rounds, p.repeats)) for _ in p.calls] for k, p in phases.items()}
    for r in range(rounds):
        for key, p in phases.items():
            n = len(p.calls)
            order = [(i + r) % n for i in range(n)] if rotate else range(n)
            for i in order:
                for j in range(p.repeats):
                    start = time.perf_counter()
                    p.calls[i]()
                    times[key][i][r, j] = time.perf_counter() - start
    return times


@dataclass(frozen=True)
class Ratio:
    """How much faster a variant ran than the baseline timed beside it: the ratio of all-run
    medians, and the median, interquartile range and extremes of the per-round ratios
    (baseline's round median over the variant's)."""

    overall: float
    round_median: float
    round_iqr: tuple[float, float]
    round_range: tuple[float, float]

    def to_json(self, prefix: str) -> dict[str, Any]:
        """The figures as `prefix`, `prefix_round_median`, `prefix_round_iqr`, `prefix_rounds` (min, max)."""
        return {prefix: self.overall, f"{prefix}_round_median": self.round_median,
                f"{prefix}_round_iqr": list(self.round_iqr), f"{prefix}_rounds": list(self.round_range)}


def ratio(baseline: np.ndarray, variant: np.ndarray) -> Ratio:
    """Speed-up of `variant` over `baseline`, both (rounds, repeats) arrays from `time_rounds`."""
    per_round = np.median(baseline, axis=1) / np.median(variant, axis=1)
    q25, q75 = np.percentile(per_round, [25, 75])
    return Ratio(float(np.median(baseline) / np.median(variant)), float(np.median(per_round)),
                 (float(q25), float(q75)), (float(per_round.min()), float(per_round.max())))
