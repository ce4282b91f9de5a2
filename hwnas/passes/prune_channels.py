"""Structured pruning: `prune-channels` removes whole channels, least important first, in
the groups `hwnas.passes.channels` finds, with a ratio per group from a policy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hwnas.errors import PipelineError
from hwnas.ir.graph import Graph
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.channels import ChannelAnalysis, ChannelGroup, channel_groups, private_weights


def prune_channels(graph: Graph, ratios: float | Mapping[str, float], criterion: str = "l1",
                   multiple: int = 1) -> dict[str, int]:
    """Removes `ratio` of each group's channels, least important first (at least one
    channel of a group stays; with `multiple`, kept counts round up to its multiples).
    `ratios` is one ratio for every group or a ratio per group name or per source node
    name (a group given several takes the smallest). Returns the channels removed per
    group name."""
    analysis = ChannelAnalysis(graph)
    groups = analysis.groups()
    per_group = _group_ratios(groups, ratios)
    score = analysis.importance(criterion)
    chosen: list[int] = []
    result: dict[str, int] = {}
    for g in groups:
        r = per_group.get(g.name, 0.0)
        k = g.removable(r, multiple)
        if k <= 0:
            continue
        comps = np.asarray(g.components)
        order = np.argsort(score[comps], kind="stable")
        chosen.extend(comps[order[:k]].tolist())
        result[g.name] = k
    if chosen:
        analysis.remove(np.asarray(chosen, np.int64))
    return result


def ratios_toward(graph: Graph, original: Mapping[str, int], target: float) -> dict[str, float]:
    """Per-group ratios that take each group of an already pruned graph to `target` of the
    channels it had in `original` (group name → channels, from `channel_groups` of the
    unpruned graph): pruning in steps then lands where one cut would, instead of compounding
    each step's rounding (with `multiple=8`, 10% of 32 channels rounds back to 32 forever)."""
    out = {}
    for g in channel_groups(graph):
        if g.name in original and g.components:
            keep = max(1.0, (1.0 - target) * original[g.name])
            out[g.name] = min(max(0.0, 1.0 - keep / g.channels), 0.999999)
    return out


def _group_ratios(groups: list[ChannelGroup], ratios: float | Mapping[str, float]) -> dict[str, float]:
    if not isinstance(ratios, Mapping):
        _check_ratio(float(ratios))
        return {g.name: float(ratios) for g in groups}
    known = {g.name for g in groups} | {s for g in groups for s in g.sources}
    unknown = [k for k in ratios if k not in known]
    if unknown:
        raise PipelineError(f"prune-channels: no prunable layer named '{unknown[0]}'")
    out = {}
    for g in groups:
        given = [float(ratios[k]) for k in (g.name, *g.sources) if k in ratios]
        for r in given:
            _check_ratio(r)
        if given:
            out[g.name] = min(given)
    return out


def _check_ratio(r: float) -> None:
    if not 0.0 <= r < 1.0:
        raise PipelineError(f"prune-channels: ratio must be in [0, 1), not {r}")


def parse_ratios(text: str) -> dict[str, float]:
    """'conv1=0.3;conv2=0.5' (or ':' instead of '=') → {'conv1': 0.3, 'conv2': 0.5}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.replace(",", ";").split(";"))):
        name, sep, value = item.replace(":", "=").rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise PipelineError(f"prune-channels: ratios entry '{item}' is not name=ratio") from None
    return out


@register_pass
@dataclass(frozen=True)
class PruneChannels(Pass):
    """Structured pruning: removes `ratio` of the channels of every layer group (filters and
    everything that reads them: BatchNorm, depthwise filters, residual branches, Concat
    parts, Flatten features, the next layer's input channels), scored by `criterion` (l1 or
    l2 norm of the filters, or bn: |γ| of the BatchNorm that follows, as network
    slimming does). `policy=uniform` uses `ratio` everywhere; `policy=given` reads
    `ratios="layer=0.3;other=0.5"` (layers not named stay whole); `policy=sensitivity`
    prunes each group alone on sample inputs (`calib`: an .npz as for quantize, or
    `--calib-data`; else `samples` random ones), measures how far the outputs move, and
    spends the same weight budget as uniform `ratio` on the least sensitive groups.
    `multiple=8` rounds each group's kept channels up to a multiple of 8, the counts CPU
    kernels vectorize best (onnxruntime's blocked layouts pad odd counts). Lossy: the model
    needs fine-tuning (`hwnas compress`)."""

    name = "prune-channels"
    tolerance = math.inf
    ratio: float = 0.5
    criterion: Literal["l1", "l2", "bn"] = "l1"
    policy: Literal["uniform", "given", "sensitivity"] = "uniform"
    ratios: str = ""
    multiple: int = 1
    samples: int = 8
    seed: int = 0
    calib: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), not {self.ratio}")
        if self.multiple < 1:
            raise ValueError(f"multiple must be at least 1, not {self.multiple}")
        if self.criterion not in ("l1", "l2", "bn"):
            raise ValueError(f"criterion must be l1, l2 or bn, not {self.criterion!r}")
        if self.policy == "given" and not self.ratios:
            raise ValueError("policy=given needs ratios=\"layer=r;...\"")
        for r in parse_ratios(self.ratios).values():
            _check_ratio(r)

    def run(self, graph: Graph) -> PassResult:
        prepared = private_weights(graph)  # exact, but a change all the same
        if self.policy == "given":
            ratios: float | dict[str, float] = parse_ratios(self.ratios)
        elif self.policy == "sensitivity":
            from hwnas.passes.prune_policy import sensitivity_ratios
            from hwnas.passes.quantize import load_calibration

            feeds = load_calibration(graph, self.calib, self.samples) if self.calib else None
            ratios = sensitivity_ratios(graph, self.ratio, self.criterion, samples=self.samples, seed=self.seed,
                                        feeds=feeds)
        else:
            ratios = self.ratio
        removed = prune_channels(graph, ratios, self.criterion, self.multiple)
        return PassResult(graph, bool(removed) or prepared)
