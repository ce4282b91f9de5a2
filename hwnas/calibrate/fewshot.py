"""Few-shot refit: adapt a calibration to a changed setting (2 threads instead of 1, another
onnxruntime build) from a handful of whole-model measurements instead of a new calibration.

Model: measured = sum over kernel groups of scale[group] * (that group's calibrated
latencies) + per_kernel_s * (number of kernels) + what the calibration cannot price. The
scales and the per-kernel constant are bounded least squares (scipy's `lsq_linear`) on
relative errors, with a weak prior pulling each scale toward 1, so that one or two models
give a sensible answer and twenty pin every group down. A scale never goes below
`SCALE_FLOOR`: plain non-negative least squares sets a group to exactly 0 whenever the other
groups over-explain the few models measured, and a kernel that costs nothing would then make
every model heavy in it look free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from hwnas.backends.cost import estimate
from hwnas.backends.cost.base import NodeWork
from hwnas.backends.target import Target, load_target
from hwnas.calibrate.predictor import Calibration, Setting
from hwnas.ir.graph import Graph

US = 1e-6  # the per-kernel constant is solved in microseconds, for conditioning
SCALE_FLOOR = 0.05
"""The smallest scale a kernel group gets: no change of setting (threads, onnxruntime build)
makes a kind of kernel twenty times faster than calibrated."""


@dataclass
class _Recorder:
    """Prices with the calibrated setting and remembers each node's kernel group."""

    cal: Calibration
    groups: dict[str, str] = field(default_factory=dict)

    def predict(self, work: NodeWork) -> float | None:
        r = self.cal.predict_base(work)
        if r is None:
            return None
        self.groups[work.node.name] = r[0]
        return r[1]


@dataclass(frozen=True)
class KernelSums:
    """A model's calibrated latency split by kernel group: the terms the few-shot refit scales."""

    seconds: dict[str, float]
    """Calibrated seconds per kernel group."""
    kernels: int
    fixed_s: float
    """Seconds of nodes the calibration cannot price (left to the roofline)."""


def kernel_sums(cal: Calibration, graph: Graph, target: Target) -> KernelSums:
    rec = _Recorder(cal.with_setting(None))
    report = estimate(graph, target, predictor=rec)
    seconds: dict[str, float] = {}
    kernels, fixed = 0, 0.0
    for c in report.nodes:
        group = rec.groups.get(c.node)
        if c.latency_s is None or group == "absorbed":
            continue
        if group is None:
            fixed += c.latency_s
        else:
            seconds[group] = seconds.get(group, 0.0) + c.latency_s
            kernels += 1
    return KernelSums(seconds, kernels, fixed)


def as_graph(model: onnx.ModelProto | Graph) -> Graph:
    """A canonicalized graph: the form `estimate` prices (a Graph is taken as it is)."""
    if isinstance(model, Graph):
        return model
    from hwnas.frontends.onnx import import_onnx
    from hwnas.passes import PassRunner, parse_pipeline

    return PassRunner().run(parse_pipeline("canonicalize"), import_onnx(model)).graph


def refit_few_shot(cal: Calibration, models: list[onnx.ModelProto | Graph], measured_s: list[float],
                   setting: str = "few-shot", *, target: Target | None = None, prior: float = 0.01,
                   note: str = "") -> Calibration:
    """`cal` with a new setting `setting` fitted to `measured_s` (seconds per model), and active."""
    if len(models) != len(measured_s) or not models:
        raise ValueError(f"need as many measurements as models, and at least one ({len(models)} vs {len(measured_s)})")
    target = target or load_target(cal.target)
    sums = [kernel_sums(cal, as_graph(m), target) for m in models]
    fitted = fit_setting(setting, sums, measured_s, prior=prior, note=note)
    out = Calibration(cal.target, cal.measured_with, cal.samples, {**cal.settings, setting: fitted}, setting,
                      cal.model_kind, cal.networks)
    out.share_fits(cal)
    return out


def fit_setting(name: str, sums: list[KernelSums], measured_s: list[float], *, prior: float = 0.01,
                note: str = "", floor: float = SCALE_FLOOR) -> Setting:
    """The bounded fit of the module docstring, on models' kernel sums and measured seconds:
    every scale at least `floor`, the per-kernel constant at least 0."""
    from scipy.optimize import lsq_linear

    if any(not (m > 0 and math.isfinite(m)) for m in measured_s):
        raise ValueError("measured latencies must be positive seconds")
    groups = sorted({g for s in sums for g in s.seconds})
    rows, rhs = [], []
    for s, m in zip(sums, measured_s, strict=True):
        rows.append([s.seconds.get(g, 0.0) / m for g in groups] + [s.kernels * US / m])
        rhs.append((m - s.fixed_s) / m)
    weight = math.sqrt(prior)
    mean_kernels = float(np.mean([s.kernels for s in sums]) * US / np.mean(measured_s))
    for j in range(len(groups) + 1):
        row = [0.0] * (len(groups) + 1)
        row[j] = weight * (mean_kernels if j == len(groups) else 1.0)
        rows.append(row)
        rhs.append(0.0 if j == len(groups) else weight)
    lower = np.array([floor] * len(groups) + [0.0])
    x = lsq_linear(np.array(rows), np.array(rhs), bounds=(lower, np.inf), method="bvls").x
    x = np.maximum(x, lower)  # bvls meets its bounds to rounding; a scale is never below the floor
    return Setting(name, {g: float(v) for g, v in zip(groups, x, strict=False)}, float(x[-1] * US), len(sums), note)


def predict_from_sums(setting: Setting, sums: KernelSums) -> float:
    """What `estimate` gives with `setting` active, from a model's kernel sums (no graph needed)."""
    return (sum(setting.scales.get(g, 1.0) * v for g, v in sums.seconds.items()) + setting.per_kernel_s * sums.kernels
            + sums.fixed_s)
