"""Fast NAS-Bench-201 costing equals `estimate()` on the network built as IR, on every target."""

from __future__ import annotations

import dataclasses

import pytest

from hwnas.backends.cost import estimate
from hwnas.backends.target import available_targets, load_target
from hwnas.errors import CostError
from hwnas.search.cost import NB201Cost
from hwnas.search.spaces.nasbench201 import parse_arch
from hwnas.search.spaces.nb201 import NB201Space

CELLS = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|",
         "|skip_connect~0|+|none~0|avg_pool_3x3~1|+|nor_conv_1x1~0|skip_connect~1|none~2|",
         "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
TOL = 1e-9


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.slow
@pytest.mark.parametrize("target", available_targets())
def test_fast_cost_equals_estimate(target: str) -> None:
    fast = NB201Cost(target)
    space = NB201Space()
    for arch in CELLS:
        cell = parse_arch(arch)
        f, r = fast.price(cell), estimate(space.build_ir(cell), target)
        if target == "cortex-m7":  # the whole graph's order search is exact: a cell's output is a cut
            assert r.extra["order_search_exact"] == 1.0, arch
        assert rel(f.latency_s, r.latency_s) <= TOL and rel(f.energy_j, r.energy_j) <= TOL, arch
        assert f.weight_bytes == r.weight_bytes
        assert f.peak_memory_bytes == r.peak_memory_bytes, arch
        assert set(f.resources) == set(r.resources)
        for k, v in f.resources.items():
            assert v.available == r.resources[k].available
            assert v.used == pytest.approx(r.resources[k].used, rel=TOL), k
        assert f.fits == r.fits


def test_identical_layers_are_priced_once() -> None:
    fast = NB201Cost("h100")
    fast.price(parse_arch(CELLS[0]))
    priced = len(fast._node_costs)
    fast.price(parse_arch(CELLS[1]))  # every node kind of this cell was priced for the first
    assert len(fast._node_costs) == priced
    # 4 skeleton segments' nodes plus at most 7 kinds x 3 stages
    assert priced <= len(fast.skeleton) + 7 * 3


def test_no_fast_path_for_a_kind_without_one() -> None:
    target = dataclasses.replace(load_target("h100"), kind="dsp")
    with pytest.raises(CostError, match="no fast path for dsp targets"):
        NB201Cost(target)


def test_make_coster_prices_any_space() -> None:
    from hwnas.search.cost import FastCost, make_coster
    from hwnas.search.spaces import make_space

    cell = parse_arch(CELLS[1])
    assert make_coster(NB201Space(), "h100")(cell) == NB201Cost("h100").price(cell)
    space = make_space("mbv2")
    config = space.decode([0.0] * len(space.dims))
    price = make_coster(space, "cortex-a76")
    got = price(config)
    assert got == FastCost.of(estimate(space.build_ir(config), "cortex-a76")) and price(config) is got


@pytest.mark.slow
def test_mcu_peak_is_reached_by_an_order_of_the_whole_graph() -> None:
    """The fast MCU peak (largest per-segment optimum) is no guess: running each segment in its
    best order, one after the other, gives exactly that peak on the whole graph."""
    from hwnas.backends.cost import mcu
    from hwnas.backends.cost.liveness import peak_memory

    fast = NB201Cost("cortex-m7")
    cell = parse_arch(CELLS[0])
    graph = NB201Space().build_ir(cell)
    order, offset = [], 0
    for segment in fast.segments(cell):
        index = {id(n): i for i, n in enumerate(segment.nodes)}
        order += [graph.nodes[offset + index[id(n)]] for n in mcu.schedule(segment).order]
        offset += len(segment.nodes)
    assert offset == len(graph.nodes)
    assert [n.op for n in graph.nodes] == [n.op for s in fast.segments(cell) for n in s.nodes]
    storage = mcu.tensor_storage(graph)
    peak = peak_memory(graph, lambda producer, v: storage[v].nbytes, order=order)
    scratch = max(mcu.scratch_bytes(n) for n in graph.nodes)
    assert peak + scratch == fast.price(cell).peak_memory_bytes
