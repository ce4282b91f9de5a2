"""The channel analysis: rules are looked up per op, then per registry category; the
analysis reads the graph without changing it; a rule registered from outside takes effect."""

from __future__ import annotations

import copy

import pytest

from hwnas.ir.graph import Graph
from hwnas.ir.text import print_graph
from hwnas.passes.channels import (
    ChannelAnalysis,
    analysis,
    channel_groups,
    channel_rule,
    private_weights,
    prune_channels,
    rule_for,
    rules,
)
from hwnas.passes.channels.rules import per_channel_last_axis
from tests.backends.graphs import Builder


def _conv_op_conv(op: str) -> Graph:
    b = Builder((1, 4, 6, 6))
    y = b.op(op, b.conv(b.x, 8, name="c1"))
    b.g.outputs.append(b.conv(y, 4, name="c2"))
    return b.g


def test_rules_are_found_per_op_then_per_category() -> None:
    g = _conv_op_conv("Relu")
    by_op = {n.op: rule_for(n) for n in g.nodes}
    assert by_op["Conv"] is rules.conv, "an op's own rule"
    assert by_op["Relu"] is per_channel_last_axis, "Relu's registry category, per channel"
    assert rule_for(_conv_op_conv("Sin").nodes[1]) is None, "no rule and no category: blocks"


def test_the_analysis_does_not_change_the_graph() -> None:
    g = _conv_op_conv("Relu")
    private_weights(g)
    before = print_graph(g)
    a = ChannelAnalysis(g)
    a.groups()
    a.importance("l2")
    assert print_graph(g) == before


def test_a_rule_registered_from_outside_changes_the_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis, "_RULES", dict(analysis._RULES))  # undone after the test
    blocked = {grp.name: grp for grp in channel_groups(_conv_op_conv("Sin"))}
    assert blocked["c1"].components == [] and blocked["c1"].kept == 8, "Sin blocks c1's channels"

    @channel_rule("Sin")
    def sin(a: analysis.ChannelAnalysis, n: analysis.Node) -> None:
        per_channel_last_axis(a, n)

    g = _conv_op_conv("Sin")
    tied = {grp.name: grp for grp in channel_groups(g)}
    assert len(tied["c1"].components) == 8 and tied["c1"].kept == 0, "now Sin ties them through"
    ref = copy.deepcopy(g)
    assert prune_channels(g, 0.5) == {"c1": 4}
    assert g.node_by_name("c2").input(1).const.shape[1] == 4, "c2 reads the 4 channels left"
    assert ref.node_by_name("c2").input(1).const.shape[1] == 8
