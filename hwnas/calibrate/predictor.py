"""The fitted latency model: one regression forest per kernel group, refit from stored samples.

Each forest learns log(latency / scale) from a kernel's features, where scale is a rough
analytical latency, as nn-Meter fits one random forest per kernel type. Fitting is
deterministic (fixed random_state), so a calibration file of samples is the whole model and
no pickle is ever written. Forests are fitted on first use per group and evaluated by a small
tree walker: `estimate()` asks for one node at a time, and sklearn's per-call overhead
(~5 ms) would dominate.

A calibration with profiled networks (`NetworkSample`, `calibrate.networks`) multiplies a
kernel's single-kernel price by its group's in-network correction, exp of a small boosted model
of log(seconds inside / seconds alone) over the same features, for the ops the networks hold
enough of (`corrected_ops`) and within their range, and prices layout conversions with a model of
those timed inside the networks (`INSIDE_REORDER`). Both are refitted on load from the stored
rows, as the groups' models are.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwnas.backends.cost.base import NodeWork
from hwnas.calibrate.features import RUNTIME_INTEGER_OPS, Features, edge_features, featurize, reorder_features
from hwnas.calibrate.fusion import integer

N_TREES = 50
MIN_NETWORK_ROWS = 100
"""Kernels of one op in one group measured inside networks before that op gets an in-network
correction: a correction learned from other ops does not carry over. The profiled networks have
thousands of convs, ReLUs and Adds, one classifier Gemm each (at the default 120 networks, enough:
the Gemm is corrected within the classifiers' range, `Calibration._corrected`), and no PRelu."""
REORDER = "reorder"
INSIDE_REORDER = "reorder inside networks"
EDGE = "edge"
MAX_REORDER_ROWS = 3000


@dataclass(frozen=True)
class Sample:
    """One measured kernel: its spec, features and latency (profiler bias removed)."""

    index: int
    spec: dict[str, Any]
    group: str
    op: str
    features: tuple[float, ...]
    scale_s: float
    latency_s: float
    profiled_s: float
    events: int
    wall_s: float
    reorders: tuple[tuple[int, int, int, int, float], ...] = ()
    """Layout conversions timed around the kernel: (to NCHWc, C, H, W, latency_s), bias removed."""
    edges: tuple[tuple[int, int, int, float], ...] = ()
    """Around an integer kernel, the Quantize/Dequantize/Transpose nodes timed with it: (index in
    `fusion.EDGE_OPS`, elements, last dimension, latency_s), bias removed."""

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "spec": self.spec, "group": self.group, "op": self.op,
                "features": list(self.features), "scale_s": self.scale_s, "latency_s": self.latency_s,
                "profiled_s": self.profiled_s, "events": self.events, "wall_s": self.wall_s,
                "reorders": [list(r) for r in self.reorders], "edges": [list(e) for e in self.edges]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sample:
        reorders = tuple((int(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in d.get("reorders", []))
        edges = tuple((int(e[0]), int(e[1]), int(e[2]), float(e[3])) for e in d.get("edges", []))
        return cls(int(d["index"]), dict(d["spec"]), str(d["group"]), str(d["op"]),
                   tuple(float(x) for x in d["features"]), float(d["scale_s"]), float(d["latency_s"]),
                   float(d["profiled_s"]), int(d["events"]), float(d["wall_s"]), reorders, edges)


@dataclass(frozen=True)
class NetworkRow:
    """One kernel as it ran inside a whole network: the node heading it, its features (as
    `featurize` gives them in that network) and its profiled seconds there, the profiler's own
    time taken off."""

    node: str
    group: str
    op: str
    features: tuple[float, ...]
    scale_s: float
    seconds: float
    reorders: tuple[tuple[bool, tuple[int, int, int]], ...] = ()
    """The layout conversions the fusion rules charge this kernel (as `Features.reorders`)."""

    def to_json(self) -> list[Any]:
        return [self.node, self.group, self.op, list(self.features), self.scale_s, self.seconds,
                [[int(t), *shape] for t, shape in self.reorders]]

    @classmethod
    def from_json(cls, d: list[Any]) -> NetworkRow:
        reorders = tuple((bool(r[0]), (int(r[1]), int(r[2]), int(r[3]))) for r in d[6])
        return cls(str(d[0]), str(d[1]), str(d[2]), tuple(float(x) for x in d[3]), float(d[4]), float(d[5]), reorders)


@dataclass(frozen=True)
class NetworkSample:
    """A whole network of hwnas's search spaces profiled on this machine (`calibrate.networks`):
    each kernel's time inside it, and each layout conversion's."""

    index: int
    name: str
    rows: tuple[NetworkRow, ...]
    reorders: tuple[tuple[int, int, int, int, float], ...] = ()
    """The layout conversions onnxruntime ran: (to NCHWc, C, H, W, seconds)."""
    wall_s: float = 0.0
    """The network's seconds per run without the profiler, which its nodes' times sum to."""
    overhead_s: float = 0.0
    """The profiler's own time per node, taken off every node's (`timing.time_network`)."""

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "wall_s": self.wall_s, "overhead_s": self.overhead_s,
                "reorders": [list(r) for r in self.reorders], "rows": [r.to_json() for r in self.rows]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NetworkSample:
        reorders = tuple((int(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in d["reorders"])
        return cls(int(d["index"]), str(d["name"]), tuple(NetworkRow.from_json(r) for r in d["rows"]), reorders,
                   float(d["wall_s"]), float(d["overhead_s"]))


@dataclass(frozen=True)
class Setting:
    """A changed measuring setting fitted few-shot: latency = scale[group] * base + per_kernel_s."""

    name: str
    scales: dict[str, float]
    per_kernel_s: float
    models: int
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"scales": self.scales, "per_kernel_s": self.per_kernel_s, "models": self.models, "note": self.note}

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> Setting:
        return cls(name, {k: float(v) for k, v in d["scales"].items()}, float(d["per_kernel_s"]), int(d["models"]),
                   str(d.get("note", "")))


class TreeEnsemble:
    """A fitted sklearn tree ensemble, flattened to lists for fast single-row prediction."""

    def __init__(self, estimator: Any) -> None:
        from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor

        self.trees: list[tuple[list[int], list[int], list[int], list[float], list[float]]] = []
        if isinstance(estimator, HistGradientBoostingRegressor):
            # Leaf values already carry the learning rate; leaves have left == right == 0.
            self.offset, self.weight = float(np.ravel(estimator._baseline_prediction)[0]), 1.0
            for (predictor,) in estimator._predictors:
                nodes = predictor.nodes
                left = np.where(nodes["is_leaf"] == 1, -1, nodes["left"].astype(np.int64)).tolist()
                self.trees.append((left, nodes["right"].tolist(), nodes["feature_idx"].tolist(),
                                   nodes["num_threshold"].tolist(), nodes["value"].tolist()))
            return
        if isinstance(estimator, GradientBoostingRegressor):
            trees = [t[0].tree_ for t in estimator.estimators_]
            self.offset = float(estimator.init_.constant_[0][0]) if hasattr(estimator.init_, "constant_") else 0.0
            self.weight = float(estimator.learning_rate)
        else:
            trees = [t.tree_ for t in estimator.estimators_]
            self.offset, self.weight = 0.0, 1.0 / len(trees)
        self.trees = [(t.children_left.tolist(), t.children_right.tolist(), t.feature.tolist(), t.threshold.tolist(),
                       t.value.reshape(-1).tolist()) for t in trees]

    def predict(self, x: tuple[float, ...]) -> float:
        total = 0.0
        for left, right, feature, threshold, value in self.trees:
            i = 0
            while left[i] != -1:
                i = left[i] if x[feature[i]] <= threshold[i] else right[i]
            total += value[i]
        return self.offset + self.weight * total


MODELS = {
    "forest": lambda n: _forest(n),
    "correction": lambda n: _correction(n),
    "boosting": lambda n: _boosting(n),
    "hist": lambda n: _hist(n),
}


def _forest(n: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    # Half-size bootstrap samples fit twice as fast, at the same accuracy on thousands of rows.
    return RandomForestRegressor(n_estimators=N_TREES, max_features=0.6, random_state=0, n_jobs=1,
                                 max_samples=0.5 if n >= 200 else None)


def _boosting(n: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(n_estimators=200, max_depth=4, learning_rate=0.08, subsample=0.5,
                                     random_state=0)


def _correction(n: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    # Small, shallow and slow-learning: a correction of a few tens of percent, from a few
    # thousand kernels of some tens of networks.
    return GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.7,
                                     random_state=0)


def _hist(n: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=5,
                                         l2_regularization=0.0, early_stopping=False, random_state=0)


def fit_group(rows: list[tuple[tuple[float, ...], float, float]], kind: str = "forest") -> TreeEnsemble:
    """One group's model on log(latency / scale) from (features, scale_s, latency_s) rows; deterministic."""
    x = np.array([r[0] for r in rows], dtype=np.float64)
    y = np.array([math.log(r[2] / r[1]) for r in rows])
    model = MODELS[kind](len(rows))
    model.fit(x, y)
    return TreeEnsemble(model)


def training_rows(samples: list[Sample], group: str) -> list[tuple[tuple[float, ...], float, float]]:
    """A group's (features, scale_s, latency_s) rows; "reorder" gathers the samples' conversions
    (every third of them is plenty for this simple function, and fits three times faster), "edge"
    the Quantize/Dequantize/Transpose nodes timed around integer kernels."""
    if group == EDGE:
        return [(*edge_features(op, n, last), seconds) for s in samples for op, n, last, seconds in s.edges]
    if group != REORDER:
        return [(s.features, s.scale_s, s.latency_s) for s in samples if s.group == group]
    rows = []
    for s in samples:
        for to_nchwc, c, h, w, seconds in s.reorders:
            values, scale = reorder_features(bool(to_nchwc), (c, h, w))
            rows.append((values, scale, seconds))
    return rows[::3] if len(rows) > MAX_REORDER_ROWS else rows


@dataclass
class Calibration:
    """Measured kernels of one target and the predictor fitted to them (the `Predictor` that
    `hwnas.backends.cost.estimate` takes). `setting` picks a few-shot refit by name."""

    target: str
    measured_with: dict[str, Any]
    samples: list[Sample]
    settings: dict[str, Setting] = field(default_factory=dict)
    setting: str | None = None
    model_kind: str = "boosting"
    networks: list[NetworkSample] = field(default_factory=list)
    """Whole networks profiled for the in-network correction (none: kernels priced as alone)."""
    _models: dict[str, TreeEnsemble | None] = field(default_factory=dict, repr=False)
    _corrections: dict[str, TreeEnsemble | None] = field(default_factory=dict, repr=False)
    _network_ops: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _domains: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict, repr=False)
    _ops: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _cache: dict[tuple, float | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for s in self.samples:
            self._ops.setdefault(s.group, set()).add(s.op)
        counts: dict[tuple[str, str], int] = {}
        for net in self.networks:
            for r in net.rows:
                if r.seconds > 0:
                    counts[r.group, r.op] = counts.get((r.group, r.op), 0) + 1
        for (g, op), n in counts.items():
            if n >= MIN_NETWORK_ROWS:
                self._network_ops.setdefault(g, set()).add(op)

    def predict(self, work: NodeWork) -> float | None:
        """Seconds for the kernel `work` heads; 0 when onnxruntime runs it inside another
        kernel; None for what was not calibrated (other precisions, unmeasured ops or groups)."""
        base = self.predict_base(work)
        if base is None or self.setting is None:
            return None if base is None else base[1]
        group, seconds = base
        if seconds == 0.0:
            return 0.0
        s = self.settings[self.setting]
        return s.scales.get(group, 1.0) * seconds + s.per_kernel_s

    def predict_base(self, work: NodeWork) -> tuple[str, float] | None:
        """(group, seconds) in the calibrated setting, before any few-shot refit; the seconds
        include the layout conversions onnxruntime adds for this kernel. Float kernels and 8-bit
        integer ones (`fusion.integer`: what onnxruntime runs as QLinearConv, QGemm, QLinearAdd)
        are priced, and onnxruntime's dynamically quantized kernels (`RUNTIME_INTEGER_OPS`); other
        precisions (fp16, fake-quantized widths) are not."""
        if work.precision != "fp32" and not integer(work.node) and work.node.op not in RUNTIME_INTEGER_OPS:
            return None
        f = featurize(work)
        if f is None:
            return ("absorbed", 0.0)
        key = (f.group, f.op, f.values, f.reorders, f.edges)
        if key not in self._cache:
            self._cache[key] = self._predict_features(f)
        value = self._cache[key]
        return None if value is None else (f.group, value)

    def _predict_features(self, f: Features) -> float | None:
        if f.op not in self._ops.get(f.group, ()):
            return None
        seconds = self._alone(f.group, f.values, f.scale_s)
        if seconds is None:
            return None
        correction = self._corrected(f)
        if correction is not None:
            seconds *= math.exp(correction.predict(f.values))
        if f.reorders:
            seconds += self._reorders(f.reorders)
        if f.edges:
            edge = self.model(EDGE)
            for op, n, last in f.edges:
                values, scale = edge_features(op, n, last)
                seconds += scale * math.exp(edge.predict(values)) if edge is not None else 0.0
        return seconds

    def _alone(self, group: str, values: tuple[float, ...], scale_s: float) -> float | None:
        """The kernel's seconds as measured alone (the single-kernel models' predictor)."""
        model = self.model(group)
        return None if model is None else scale_s * math.exp(model.predict(values))

    def _reorders(self, reorders: tuple[tuple[bool, tuple[int, int, int]], ...], inside: bool = True) -> float:
        """Seconds of these layout conversions: as timed inside the profiled networks where there
        are enough of them (`inside`), else as timed around single kernels."""
        reorder = (self.model(INSIDE_REORDER) if inside else None) or self.model(REORDER)
        if reorder is None:
            return 0.0
        total = 0.0
        for to_nchwc, shape in reorders:
            values, scale = reorder_features(to_nchwc, shape)
            total += scale * math.exp(reorder.predict(values))
        return total

    def corrected_ops(self, group: str) -> set[str]:
        """The ops of `group` that the in-network correction applies to: those with at least
        `MIN_NETWORK_ROWS` kernels in the profiled networks."""
        return self._network_ops.get(group, set())

    def correction(self, group: str) -> TreeEnsemble | None:
        """The in-network correction of a group: log(seconds inside a network / seconds alone)
        as a function of the kernel's features, fitted to the profiled networks' kernels of its
        `corrected_ops`; None where there are none."""
        if group not in self._corrections:
            ops = self.corrected_ops(group)
            rows = []
            for net in self.networks:
                for r in net.rows:
                    take = r.group == group and r.op in ops and r.seconds > 0
                    alone = self._alone(group, r.features, r.scale_s) if take else None
                    if alone:
                        rows.append((r.features, alone, r.seconds))
            self._corrections[group] = fit_group(rows, "correction") if rows else None
            if rows:
                x = np.array([r[0] for r in rows])
                self._domains[group] = (tuple(x.min(axis=0)), tuple(x.max(axis=0)))
        return self._corrections[group]

    def _corrected(self, f: Features) -> TreeEnsemble | None:
        """The correction for this kernel: none for an op the networks hold too few of, nor for a
        kernel outside the networks' range in any feature (a rank-3 tensor, a 2048-row conv, a
        model of hundreds of megabytes), which the correction would extrapolate to."""
        if f.op not in self.corrected_ops(f.group):
            return None
        model = self.correction(f.group)
        lo, hi = self._domains.get(f.group, ((), ()))
        if model is None or not all(a <= v <= b for a, v, b in zip(lo, f.values, hi, strict=True)):
            return None
        return model

    def reorder_factor(self) -> float:
        """Layout conversions inside the profiled networks over what the single-kernel
        conversions predict for them (1 without networks): a diagnostic of `INSIDE_REORDER`,
        which prices them."""
        conversions = [(bool(t), (c, h, w)) for n in self.networks for t, c, h, w, _ in n.reorders]
        measured = sum(r[4] for n in self.networks for r in n.reorders)
        predicted = self._reorders(tuple(conversions), inside=False) if conversions else 0.0
        return measured / predicted if predicted > 0 and measured > 0 else 1.0

    def model(self, group: str) -> TreeEnsemble | None:
        if group not in self._models:
            self._models[group] = self._fit(group)
        return self._models[group]

    def fit_all(self) -> None:
        """Fit every group now, side by side (sklearn's tree builders release the GIL), then
        the in-network corrections."""
        groups = [g for g in [*sorted(self._ops), REORDER, EDGE, INSIDE_REORDER] if g not in self._models]
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            fitted = dict(zip(groups, pool.map(self._fit, groups), strict=True))
            self._models.update(fitted)
            todo = sorted({r.group for n in self.networks for r in n.rows} - set(self._corrections))
            list(pool.map(self.correction, todo))

    def _fit(self, group: str) -> TreeEnsemble | None:
        if group == INSIDE_REORDER:
            rows = [(*reorder_features(bool(t), (c, h, w)), seconds) for n in self.networks
                    for t, c, h, w, seconds in n.reorders if seconds > 0]
            return fit_group(rows, self.model_kind) if len(rows) >= MIN_NETWORK_ROWS else None
        rows = training_rows(self.samples, group)
        return fit_group(rows, self.model_kind) if len(rows) >= 3 else None

    def with_setting(self, name: str | None) -> Calibration:
        """The same calibration predicting for another setting (None: the calibrated one)."""
        if name is not None and name not in self.settings:
            known = ", ".join(sorted(self.settings)) or "none"
            raise KeyError(f"no setting '{name}' in this calibration (known: {known})")
        other = Calibration(self.target, self.measured_with, self.samples, self.settings, name, self.model_kind,
                            self.networks)
        other.share_fits(self)
        return other

    def share_fits(self, other: Calibration) -> None:
        """Use `other`'s fitted models (the same samples and networks: the same fits)."""
        self._models, self._cache = other._models, other._cache
        self._corrections = other._corrections
        self._domains = other._domains
