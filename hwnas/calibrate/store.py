"""Measuring a calibration and keeping it beside its target, as JSON samples (never a pickle).

A shipped target's calibration lives in the user's data folder
(`$XDG_DATA_HOME/hwnas/calibration/<target>.json`, XDG's default being
`~/.local/share/hwnas/calibration/`); a target file of the user's own
(`./board.toml`) keeps it next to itself (`./board.calib.json`). Samples are written as they
are measured (an atomic rewrite every few samples and on exit, Ctrl-C included), and a new run
skips the kernels the file already holds, so an interrupted calibration resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort

from hwnas.backends.cost.base import node_work
from hwnas.backends.measure import cpu_model
from hwnas.backends.target import TARGETS_DIR, Target, load_target
from hwnas.calibrate.features import FEATURES_VERSION, Features, featurize
from hwnas.calibrate.kernels import FAMILIES, INT8_FAMILIES, prepare, sample_spec
from hwnas.calibrate.networks import measure_network, refeaturize_network
from hwnas.calibrate.predictor import Calibration, NetworkSample, Sample, Setting
from hwnas.calibrate.timing import EDGE_OPS, profiler_bias, time_kernel
from hwnas.errors import HwnasError
from hwnas.files import write_atomic
from hwnas.ir.graph import Graph

FORMAT = "hwnas-calibration"
VERSION = 1
HOST_TARGET = "host-cpu"
DEFAULT_SAMPLES = 3000
DEFAULT_NETWORKS = 120


class CalibrationError(HwnasError):
    """A target cannot be calibrated here, or a calibration file is unreadable or mismatched."""


def data_dir() -> Path:
    """The user's calibrations: `$XDG_DATA_HOME/hwnas/calibration` (XDG's default data home
    is `~/.local/share`), read when asked, so a test suite can point it elsewhere."""
    home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(home) / "hwnas" / "calibration"


def calibration_path(target: Target) -> Path:
    """Where `target`'s calibration lives by default."""
    if target.path is None or _is_shipped(target):
        return data_dir() / f"{target.name}.json"
    return target.path.with_name(f"{target.path.stem}.calib.json")


def _is_shipped(target: Target) -> bool:
    return target.path is not None and target.path.resolve().parent == TARGETS_DIR.resolve()


def check_calibratable(target: Target) -> None:
    """Only this machine can be measured: the shipped host-cpu, or a user's CPU target file
    (which, by calibrating it, the user says describes the machine the command runs on)."""
    if target.kind != "cpu":
        raise CalibrationError(f"target '{target.name}' is a {target.kind}; only CPU targets can be calibrated "
                               f"(by measuring this machine with onnxruntime)")
    if _is_shipped(target) and target.name != HOST_TARGET:
        raise CalibrationError(f"target '{target.name}' is not this machine; calibrate '{HOST_TARGET}', or run "
                               f"'hwnas calibrate' on the device itself")


def load_calibration(target: Target | str | Path, path: Path | None = None,
                     setting: str | None = None) -> Calibration | None:
    """`target`'s calibration from `path` (default: `calibration_path`), or None when there is none."""
    if not isinstance(target, Target):
        target = load_target(target)
    path = path or calibration_path(target)
    if not path.is_file():
        return None
    cal = read_calibration(path)
    try:
        cal = cal.with_setting(setting)
    except KeyError as e:
        raise CalibrationError(f"{path}: {e.args[0]}") from None
    cal.fit_all()
    return cal


def read_calibration(path: Path, *, any_features: bool = False) -> Calibration:
    """The calibration in `path`; one made with other features is refused unless `any_features`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{path}: not a calibration file (bad JSON: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CalibrationError(f"{path}: not a calibration file (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise CalibrationError(f"{path}: calibration version {data.get('version')} (this hwnas reads {VERSION})")
    try:
        samples = [Sample.from_json(s) for s in data["samples"]]
        settings = {k: Setting.from_json(k, v) for k, v in data.get("settings", {}).items()}
        networks = [NetworkSample.from_json(n) for n in data.get("networks", [])]
        measured = dict(data["measured_with"])
    except (KeyError, TypeError, ValueError) as e:
        raise CalibrationError(f"{path}: malformed calibration ({type(e).__name__}: {e})") from None
    if measured.get("features_version") != FEATURES_VERSION and not any_features:
        raise CalibrationError(f"{path}: made with features version {measured.get('features_version')}, this hwnas "
                               f"uses {FEATURES_VERSION}; run 'hwnas calibrate' on it to update (nothing is measured "
                               f"again)")
    return Calibration(str(data["target"]), measured, samples, settings, networks=networks)


def save_calibration(cal: Calibration, path: Path) -> None:
    data = {"format": FORMAT, "version": VERSION, "target": cal.target, "measured_with": cal.measured_with,
            "settings": {k: v.to_json() for k, v in sorted(cal.settings.items())},
            "samples": [s.to_json() for s in sorted(cal.samples, key=lambda s: s.index)],
            "networks": [n.to_json() for n in sorted(cal.networks, key=lambda n: n.index)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, separators=(",", ":")))


def calibrate(target: Target | str | Path, path: Path | None = None, *, samples: int = DEFAULT_SAMPLES,
              threads: int = 1, seed: int = 0, save_every: int = 50, limit: int | None = None, progress: bool = True,
              on_sample: Callable[[int, int], None] | None = None, repeats: int = 40,
              families: tuple[str, ...] | None = None, networks: int = DEFAULT_NETWORKS) -> Calibration:
    """Measure kernels 0..samples-1 of `seed` on this machine into `path`, skipping those already
    there; at most `limit` new ones; with `families`, only the kernels of those families
    (`kernels.FAMILIES`). `on_sample(index, measured_so_far)` runs after each. Between them, spread
    evenly, profile networks 0..networks-1 of `seed` for the in-network correction
    (`calibrate.networks`), likewise skipping those there."""
    if not isinstance(target, Target):
        target = load_target(target)
    check_calibratable(target)
    if threads < 1:
        raise CalibrationError(f"threads must be at least 1 (got {threads})")
    if networks < 0:
        raise CalibrationError(f"networks must be 0 or more (got {networks})")
    unknown = sorted(set(families or ()) - set(FAMILIES))
    if unknown:
        raise CalibrationError(f"unknown kernel famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)} "
                               f"(known: {', '.join(FAMILIES)})")
    path = path or calibration_path(target)
    cal = _resume(target, path, threads, seed)
    done = {s.index for s in cal.samples}
    todo = [i for i in range(samples) if i not in done
            and (families is None or sample_spec(seed, i)["family"] in families)][:limit]
    nets_done = {n.index for n in cal.networks}
    nets_todo = [i for i in range(networks) if i not in nets_done]
    measured = profiled = 0
    last_save = time.monotonic()
    bar = _progress(progress)

    def save_now() -> None:
        nonlocal last_save
        save_calibration(cal, path)
        last_save = time.monotonic()

    try:
        with bar:
            kernels = bar.add_task("calibrating kernels", total=len(todo))
            nets = bar.add_task("profiling networks", total=len(nets_todo))
            for i in todo:
                sample = measure_sample(target, i, seed, threads, cal.measured_with["profiler_bias_s"], repeats)
                if sample is not None:
                    cal.samples.append(sample)
                measured += 1
                bar.advance(kernels)
                if measured % save_every == 0 or time.monotonic() - last_save > 30:
                    save_now()
                if on_sample is not None:
                    on_sample(i, measured)
                # Networks between the kernels, evenly: the correction is a ratio of times inside
                # networks to times alone, and a shared host's speed drifts by several percent over
                # minutes; measured in turn, both sides see the same machine.
                while profiled < len(nets_todo) and profiled * len(todo) < len(nets_todo) * measured:
                    _profile_network(cal, target, nets_todo[profiled], seed, threads)
                    profiled += 1
                    bar.advance(nets)
            for i in nets_todo[profiled:]:
                _profile_network(cal, target, i, seed, threads)
                bar.advance(nets)
                if time.monotonic() - last_save > 30:
                    save_now()
    finally:
        save_calibration(cal, path)
    return Calibration(cal.target, cal.measured_with, cal.samples, cal.settings, networks=cal.networks)


def _profile_network(cal: Calibration, target: Target, index: int, seed: int, threads: int) -> None:
    cal.networks.append(measure_network(target, index, seed, threads, cal.measured_with["profiler_bias_s"]))


def kernel_features(target: Target, graph: Graph) -> Features | None:
    """The main node's features, from the kernel's IR graph (`kernels.prepare`: as `estimate`
    sees such a node)."""
    main = next(n for n in graph.nodes if n.name.startswith("k_main"))
    hw = target.roofline
    work = node_work(main, target, hw.peak_ops_per_s if hw is not None else {"fp32": 1.0}, graph)
    return featurize(work) if work is not None else None


def measure_sample(target: Target, index: int, seed: int, threads: int, bias_s: float,
                   repeats: int = 40) -> Sample | None:
    """Kernel `index` of `seed`: its features and its time."""
    return measure_spec(target, index, sample_spec(seed, index), threads, bias_s, repeats)


def measure_spec(target: Target, index: int, spec: dict[str, Any], threads: int, bias_s: float,
                 repeats: int = 40) -> Sample | None:
    """The kernel of `spec` (numbered `index`), measured now: its features and its time, with
    `bias_s` of profiler overhead per event taken off; None when onnxruntime runs it inside
    another kernel."""
    graph, model = prepare(spec)
    f = kernel_features(target, graph)
    if f is None:
        return None
    edge_ops = EDGE_OPS if spec["family"] in INT8_FAMILIES else ()
    t = time_kernel(model, threads=threads, repeats=repeats, edges=edge_ops)
    latency = max(t.profiled_s - t.events * bias_s, 1e-7)
    reorders = tuple((*r[:4], max(r[4] - bias_s, 5e-8)) for r in t.reorders)
    edges = tuple((*e[:3], max(e[3] - bias_s, 5e-8)) for e in t.edges)
    return Sample(index, spec, f.group, f.op, f.values, f.scale_s, latency, t.profiled_s, t.events, t.wall_s,
                  reorders, edges)


def _resume(target: Target, path: Path, threads: int, seed: int) -> Calibration:
    settings = {"runtime": "onnxruntime", "ort_version": ort.__version__, "threads": threads, "seed": seed,
                "machine": cpu_model(), "features_version": FEATURES_VERSION}
    if path.is_file():
        cal = read_calibration(path, any_features=True)
        for key in ("ort_version", "threads", "seed", "machine"):
            if cal.measured_with.get(key) != settings[key]:
                raise CalibrationError(f"{path}: measured with {key} = {cal.measured_with.get(key)!r}, not "
                                       f"{settings[key]!r}; give another --out, or use --few-shot for a new setting")
        if cal.measured_with.get("features_version") != FEATURES_VERSION:
            cal = refeaturize(cal, target)
            save_calibration(cal, path)
        return cal
    settings["profiler_bias_s"] = profiler_bias(threads)
    return Calibration(target.name, settings, [])


def refeaturize(cal: Calibration, target: Target) -> Calibration:
    """The same measurements with this hwnas's features, recomputed from each kernel's spec."""
    samples = []
    for s in cal.samples:
        f = kernel_features(target, prepare(s.spec)[0])
        if f is not None:
            samples.append(dataclasses.replace(s, group=f.group, op=f.op, features=f.values, scale_s=f.scale_s))
    networks = [refeaturize_network(n, target, int(cal.measured_with.get("seed", 0))) for n in cal.networks]
    return Calibration(cal.target, {**cal.measured_with, "features_version": FEATURES_VERSION}, samples, cal.settings,
                       networks=networks)


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)
