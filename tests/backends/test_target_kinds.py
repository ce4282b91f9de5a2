"""A kind of target is one dataclass, one cost module and one TOML: a toy kind written into a
temporary module registers itself, and hwnas loads, checks and prices its targets with no
edit of hwnas. The registries are restored after each test."""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import hwnas.backends.cost as cost
import hwnas.backends.target as target_module
from hwnas.backends.cost import available_cost_models, estimate
from hwnas.backends.target import available_kinds, kind_info, load_target
from hwnas.errors import CostError, TargetError

from .graphs import conv_net

TOY_MODULE = '''
"""A toy accelerator: every node takes its MACs / rate seconds."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.backends.cost import cost_model
from hwnas.backends.cost.base import Context, CostTable, NodeWork, Predictor, make_report, price_nodes
from hwnas.backends.cost.report import Bound, CostReport, NodeCost, Resource
from hwnas.backends.target import PerPrecision, Target, hardware_kind
from hwnas.ir.graph import Graph


@hardware_kind("toy")
@dataclass(frozen=True)
class Toy:
    """MACs per second at each precision, and an SRAM that holds the weights."""

    macs_per_s: PerPrecision
    sram_bytes: float

    def integer_widths(self) -> set[int]:
        return {int(p[3:]) for p in self.macs_per_s if p.startswith("int")}


table = CostTable("toy")


@table.cost("*")
def any_op(w: NodeWork, hw: Toy, ctx: Context) -> NodeCost:
    return w.node_cost(w.macs / hw.macs_per_s[w.precision], 0.0, Bound.COMPUTE)


@cost_model("toy")
def estimate(graph: Graph, target: Target, predictor: Predictor | None = None) -> CostReport:
    hw = target.section(Toy)
    costs, works = price_nodes(graph, target, table, hw, hw.macs_per_s, predictor)
    weights = sum(w.weight_bytes for w in works)
    return make_report(target, graph, costs, list(graph.nodes),
                       latency_s=sum(c.latency_s for c in costs if c.latency_s is not None),
                       peak_memory_bytes=weights, weight_bytes=weights,
                       resources={"SRAM": Resource(weights, hw.sram_bytes, "B")}, predictor=predictor)
'''

TOY_TOML = '''
name = "toy-board"
kind = "toy"
description = "a toy accelerator for the test"

[compile]
pipeline = "canonicalize"

[toy]
macs_per_s = { fp32 = 1e9, int8 = 4e9 }  # made up for the test
sram_bytes = 1048576  # made up for the test
'''

# conv_net(32, 32) by hand: conv1 3->32 3x3, depthwise 32 3x3, pointwise 32->64, gemm 64->10.
CONV_NET_MACS = {"conv1": 32 * 32 * 32 * 3 * 9, "dw": 32 * 32 * 32 * 9, "pw": 32 * 32 * 64 * 32, "fc": 64 * 10}


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made in the test go to copies of the registries, dropped afterwards."""
    available_cost_models()  # the built-in cost modules register before the copy is taken
    monkeypatch.setattr(target_module, "_KINDS", dict(target_module._KINDS))
    monkeypatch.setattr(cost, "_MODELS", dict(cost._MODELS))


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries: None) -> Path:
    """The toy kind imported from a module file by path; the path of a toy target's TOML."""
    path = tmp_path / "toy_kind.py"
    path.write_text(textwrap.dedent(TOY_MODULE))
    spec = importlib.util.spec_from_file_location("toy_kind", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toy_kind", module)  # type hints resolve in the module's namespace
    spec.loader.exec_module(module)
    toml = tmp_path / "toy-board.toml"
    toml.write_text(TOY_TOML)
    return toml


def test_a_toy_kind_from_a_module_prices_a_real_graph(toy: Path) -> None:
    t = load_target(toy)
    assert t.kind == "toy" and type(t.hw).__name__ == "Toy" and t.compile.tvm_target == ""
    assert "toy" in available_kinds() and available_cost_models()["toy"] == "toy_kind.estimate"
    r = estimate(conv_net(), t)
    assert r.kind == "toy" and not r.unpriced and r.fits
    for name, macs in CONV_NET_MACS.items():
        assert r.node(name).macs == macs and r.node(name).latency_s == pytest.approx(macs / 1e9)
    assert r.latency_s == pytest.approx(sum(CONV_NET_MACS.values()) / 1e9)
    assert estimate(conv_net(), str(toy)).latency_s == r.latency_s  # by path, as the CLI gives it
    assert t.integer_widths() == {8}
    t.check_integer_bits([8, 4])
    with pytest.raises(TargetError, match=r"cannot run 16-bit integers \(integer datapaths: int8\)"):
        t.check_integer_bits([16])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.replace("sram_bytes = 1048576", 'sram_bytes = "big"'), "field 'toy.sram_bytes' must be a number"),
    (lambda s: s.replace("sram_bytes = 1048576", ""), "field 'toy.sram_bytes' is missing"),
    (lambda s: s.replace("int8 = 4e9", "int7 = 4e9"), "field 'toy.macs_per_s.int7' is not a precision"),
    (lambda s: s.replace("sram_bytes", "sram_bytes = 1\nsran_bytes"), "field 'toy.sran_bytes' is not part of"),
    (lambda s: s.split("[toy]")[0], "field 'toy' is missing (a toy target needs a [toy] section)"),
])
def test_a_wrong_field_of_the_toy_section_is_named(toy: Path, edit, message: str) -> None:  # noqa: ANN001
    toy.write_text(edit(toy.read_text()))
    with pytest.raises(TargetError, match=re.escape(message)) as e:
        load_target(toy)
    assert str(e.value).startswith(str(toy)) and "\n" not in str(e.value)


def test_an_unknown_kind_is_refused_in_one_line(toy: Path) -> None:
    toy.write_text(toy.read_text().replace('kind = "toy"', 'kind = "tpu"'))
    with pytest.raises(TargetError) as e:
        load_target(toy)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(toy))
    assert "field 'kind' must be one of cpu, gpu, mcu, fpga, analog, toy, not 'tpu'" in message
    with pytest.raises(TargetError, match=r"^unknown kind 'tpu' \(known: cpu, gpu, mcu, fpga, analog, toy;"):
        kind_info("tpu")


def test_without_its_module_the_toy_kind_is_unknown(tmp_path: Path) -> None:
    """Nothing of the toy kind outlives the tests that registered it."""
    toml = tmp_path / "toy-board.toml"
    toml.write_text(TOY_TOML)
    assert "toy" not in available_kinds() and "toy" not in available_cost_models()
    with pytest.raises(TargetError, match="field 'kind' must be one of cpu, gpu, mcu, fpga, analog, not 'toy'"):
        load_target(toml)


def test_a_kind_without_a_cost_model_is_refused_in_one_line(toy: Path) -> None:
    del cost._MODELS["toy"]  # the fixture's copy
    with pytest.raises(CostError, match=r"^target 'toy-board': no cost model prices toy targets \(priced: cpu, gpu, "):
        estimate(conv_net(), toy)


def test_registering_a_taken_kind_is_refused(registries: None) -> None:
    from dataclasses import dataclass

    from hwnas.backends.cost import cost_model
    from hwnas.backends.target import hardware_kind

    @dataclass(frozen=True)
    class Other:
        def integer_widths(self) -> None:
            return None

    with pytest.raises(TypeError, match=r"kind 'mcu' is already registered by hwnas\.backends\.target\.MCU"):
        hardware_kind("mcu")(Other)
    with pytest.raises(TypeError, match="a hardware section is a dataclass with an integer_widths"):
        hardware_kind("plain")(type("Plain", (), {}))
    with pytest.raises(TypeError, match=r"kind 'cpu' is already priced by hwnas\.backends\.cost\.roofline\.estimate"):
        cost_model("cpu")(estimate)


@pytest.fixture
def installed_toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries: None) -> Iterator[Path]:
    """The toy kind as an installed package declares it: a distribution on sys.path whose
    entry point `toy` in the group hwnas.target_kinds names the module."""
    (tmp_path / "toy_kind_installed.py").write_text(textwrap.dedent(TOY_MODULE))
    dist = tmp_path / "toy_kind_installed-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-kind-installed\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hwnas.target_kinds]\ntoy = toy_kind_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    toml = tmp_path / "toy-board.toml"
    toml.write_text(TOY_TOML)
    yield toml
    sys.modules.pop("toy_kind_installed", None)


def test_an_installed_kind_is_found_by_its_entry_point(installed_toy: Path) -> None:
    assert "toy" not in available_kinds()
    t = load_target(installed_toy)
    assert t.kind == "toy" and isinstance(sys.modules.get("toy_kind_installed"), ModuleType)
    assert estimate(conv_net(), t).latency_s == pytest.approx(sum(CONV_NET_MACS.values()) / 1e9)
