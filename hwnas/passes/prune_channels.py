"""Structured pruning: `prune-channels` removes whole channels, least important first, in
the groups `hwnas.passes.channels` finds, with a ratio per group from a policy
(`hwnas.passes.prune_policy`). `prune_channels` and the ratio helpers live in
`hwnas.passes.channels.prune`, below both, and are re-exported here."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

from hwnas.ir.graph import Graph
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.channels import (
    check_ratio,
    parse_ratios,
    private_weights,
    prune_channels,
    ratios_toward,
    shortfalls,
)

__all__ = ["PruneChannels", "parse_ratios", "prune_channels", "ratios_toward"]


@register_pass
@dataclass(frozen=True)
class PruneChannels(Pass):
    """Structured pruning: removes `ratio` of the channels of every layer group (filters and
    everything that reads them: BatchNorm, depthwise filters, residual branches, Concat
    parts, Flatten features, the next layer's input channels), scored by `criterion` (l1 or
    l2 norm of the filters, or bn: |γ| of the BatchNorm that follows, as network
    slimming does). `policy=uniform` uses `ratio` everywhere; `ratios="layer=0.3;other=0.5"`
    (which implies `policy=given`, and refuses `ratio=` or `policy=sensitivity` beside it)
    prunes the layers named, each at its ratio, leaves the others whole, and warns per named
    layer that keeps more than asked, with the reason; `policy=sensitivity`
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
        if self.ratios and self.policy == "sensitivity":
            raise ValueError("ratios= gives each layer's ratio and policy=sensitivity chooses them: give one")
        if self.ratios and self.ratio != PruneChannels.ratio:
            raise ValueError("ratio= is unused beside ratios= (layers not named stay whole): give one")
        if self.ratios and self.policy == "uniform":  # ratios= names layers: it implies policy=given
            object.__setattr__(self, "policy", "given")
        if self.policy == "given" and not self.ratios:
            raise ValueError("policy=given needs ratios=\"layer=r;...\"")
        for r in parse_ratios(self.ratios).values():
            check_ratio(r)

    def run(self, graph: Graph) -> PassResult:
        prepared = private_weights(graph)  # exact, but a change all the same
        if self.policy == "given":
            given = parse_ratios(self.ratios)
            ratios: float | dict[str, float] = given
            for line in shortfalls(graph, given, self.multiple):
                warnings.warn(line, stacklevel=2)
        elif self.policy == "sensitivity":
            # Imported here: the policy runs graphs in onnxruntime, which plain pruning does not need.
            from hwnas.passes.prune_policy import sensitivity_ratios
            from hwnas.passes.quantize import load_calibration

            feeds = load_calibration(graph, self.calib, self.samples) if self.calib else None
            ratios = sensitivity_ratios(graph, self.ratio, self.criterion, samples=self.samples, seed=self.seed,
                                        feeds=feeds)
        else:
            ratios = self.ratio
        removed = prune_channels(graph, ratios, self.criterion, self.multiple)
        return PassResult(graph, bool(removed) or prepared)
