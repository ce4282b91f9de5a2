"""Removing a ratio of each group's channels, least important first: what the
`prune-channels` pass and the sensitivity policy (which prunes trial copies) both call."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from hwnas.errors import PipelineError
from hwnas.ir.graph import Graph
from hwnas.passes.channels.analysis import ChannelAnalysis, ChannelGroup
from hwnas.passes.channels.weights import LAYERS, private_weights


def channel_groups(graph: Graph) -> list[ChannelGroup]:
    """The groups structured pruning acts on, for inspection and for policies. Makes the
    graph's weights private first (`private_weights`, exact), as pruning does."""
    private_weights(graph)
    return ChannelAnalysis(graph).groups()


def prune_channels(graph: Graph, ratios: float | Mapping[str, float], criterion: str = "l1",
                   multiple: int = 1) -> dict[str, int]:
    """Removes `ratio` of each group's channels, least important first (at least one
    channel of a group stays; with `multiple`, kept counts round up to its multiples).
    `ratios` is one ratio for every group or a ratio per group name or per source node
    name (a group given several takes the smallest). Makes the weights private first.
    Returns the channels removed per group name."""
    private_weights(graph)
    analysis = ChannelAnalysis(graph)
    groups = analysis.groups()
    if isinstance(ratios, Mapping):
        _check_names(graph, groups, ratios)
    per_group = group_ratios(groups, ratios)
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


def group_ratios(groups: list[ChannelGroup], ratios: float | Mapping[str, float]) -> dict[str, float]:
    """Group name → ratio from one ratio for all or ratios by group or source name;
    PipelineError names an unknown layer or a ratio outside [0, 1)."""
    if not isinstance(ratios, Mapping):
        check_ratio(float(ratios))
        return {g.name: float(ratios) for g in groups}
    known = {g.name for g in groups} | {s for g in groups for s in g.sources}
    unknown = [k for k in ratios if k not in known]
    if unknown:
        raise PipelineError(f"prune-channels: no prunable layer named '{unknown[0]}'{_prunable(groups)}")
    out = {}
    for g in groups:
        given = [float(ratios[k]) for k in (g.name, *g.sources) if k in ratios]
        for r in given:
            check_ratio(r)
        if given:
            out[g.name] = min(given)
    return out


def shortfalls(graph: Graph, ratios: Mapping[str, float], multiple: int = 1) -> list[str]:
    """One line per layer named in `ratios` that `prune_channels` would leave with more channels
    than its ratio asks for, and why: channels that must stay (they reach a graph output or an
    op that cannot be sliced) or kept counts rounded up to `multiple`. Changes nothing but
    the weights' privacy (`private_weights`, exact)."""
    groups = channel_groups(graph)
    _check_names(graph, groups, ratios)
    per_group = group_ratios(groups, ratios)
    out = []
    for g in groups:
        if g.name not in per_group:
            continue
        r = per_group[g.name]
        asked = min(math.floor(r * g.channels + 1e-9), g.channels - 1)
        got = g.removable(r, multiple)
        if got >= asked:
            continue
        named = ", ".join(f"'{k}'" for k in dict.fromkeys((g.name, *g.sources)) if k in ratios)
        if len(g.components) < asked:
            why = f"{g.kept} of its {g.channels} channels must stay ({'; '.join(g.why_kept)})"
        else:
            why = f"kept channels round up to a multiple of {multiple}"
        out.append(f"prune-channels: layer {named} loses {got} of its {g.channels} channels, not the {asked} "
                   f"ratio {r:g} asks for: {why}")
    return out


def _prunable(groups: list[ChannelGroup], shown: int = 8) -> str:
    """' (prunable: a, b, ... and N more)': the layer names a ratio can be given for."""
    names = [s for g in groups for s in g.sources]
    if not names:
        return " (the graph has no prunable layer)"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f" (prunable: {', '.join(names[:shown])}{more})"


def _check_names(graph: Graph, groups: list[ChannelGroup], ratios: Mapping[str, float]) -> None:
    # A name that is a node but no group's source gets a reason instead of "no such layer".
    known = {g.name for g in groups} | {s for g in groups for s in g.sources}
    nodes = {n.name: n for n in graph.nodes}
    for name in ratios:
        if name in known:
            continue
        n = nodes.get(name)
        if n is None:
            raise PipelineError(f"prune-channels: no prunable layer named '{name}'{_prunable(groups)}")
        if n.op in LAYERS and not n.domain:
            raise PipelineError(f"prune-channels: layer '{name}' ({n.op}) cannot be pruned: its weight (input 1) is "
                                "not a float constant")
        raise PipelineError(f"prune-channels: '{name}' is a {n.op} node, not a layer with filters to prune "
                            f"({', '.join(LAYERS)} with a constant weight)")


def check_ratio(r: float) -> None:
    """PipelineError unless 0 <= r < 1."""
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
