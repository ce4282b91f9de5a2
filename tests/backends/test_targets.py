"""Targets are TOML data: the shipped files load, every number is sourced, and a user's
file with a missing or wrong field is refused with the field's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hwnas.backends.target import (
    FPGA,
    MCU,
    TARGETS_DIR,
    Analog,
    Roofline,
    available_kinds,
    available_targets,
    load_target,
)
from hwnas.errors import TargetError

SHIPPED = ["host-cpu", "epyc-zen5", "cortex-a76", "cortex-m7", "jetson-orin", "h100", "zcu104", "analog-pcm"]
KINDS = {"host-cpu": "cpu", "epyc-zen5": "cpu", "cortex-a76": "cpu", "cortex-m7": "mcu", "jetson-orin": "gpu",
         "h100": "gpu", "zcu104": "fpga", "analog-pcm": "analog"}


def test_shipped_targets_load_with_their_kind() -> None:
    assert set(SHIPPED) <= set(available_targets())
    for name in SHIPPED:
        t = load_target(name)
        assert t.name == name and t.kind == KINDS[name]
        assert t.path == TARGETS_DIR / f"{name}.toml"


def test_each_kind_has_its_section_and_answers_its_integer_widths() -> None:
    sections = {"cpu": Roofline, "gpu": Roofline, "mcu": MCU, "fpga": FPGA, "analog": Analog}
    assert available_kinds()[:5] == ["cpu", "gpu", "mcu", "fpga", "analog"]
    for name in SHIPPED:
        t = load_target(name)
        assert type(t.hw) is sections[t.kind] and t.section(sections[t.kind]) is t.hw
    assert load_target("host-cpu").integer_widths() == {8}
    assert load_target("cortex-m7").integer_widths() == {8}
    assert load_target("zcu104").integer_widths() == {2, 4, 8, 16}  # int4/int2 as LUT multipliers
    assert load_target("analog-pcm").integer_widths() is None  # DACs and ADCs, no integer datapath
    h100 = load_target("h100")
    assert load_target("analog-pcm").roofline is None and h100.roofline is h100.hw
    with pytest.raises(TargetError, match="target 'cortex-m7' is a mcu target: its section is MCU, not Roofline"):
        load_target("cortex-m7").section(Roofline)


def test_the_tvm_target_and_runtime_come_from_the_file() -> None:
    tvm = {name: load_target(name).compile.tvm_target for name in SHIPPED}
    assert tvm == {"host-cpu": '{"kind": "llvm", "mcpu": "native"}', "epyc-zen5": "", "cortex-a76": "",
                   "cortex-m7": "", "jetson-orin": "cuda",
                   "h100": "cuda", "zcu104": "", "analog-pcm": ""}
    assert {load_target(name).compile.runtime for name in SHIPPED} == {"onnxruntime"}


def test_host_cpu_builds_tvm_for_the_cpu_llvm_detects() -> None:
    import tvm

    from hwnas.backends.measure.tvm import tvm_target_of

    resolved = tvm.target.Target(tvm_target_of(load_target("host-cpu")))
    assert resolved.kind.name == "llvm"
    assert resolved.attrs["mcpu"] == tvm.target.codegen.llvm_get_system_cpu() != "native"
    assert tvm_target_of("llvm") == "llvm"  # a plain TVM target string is left as it is


NUMBER = re.compile(r"^\s*[\w.]+\s*=\s*(\{.*\d.*\}|[-+]?[\d.]+(e[-+]?\d+)?)\s*(#.*)?$")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_number_says_where_it_comes_from(name: str) -> None:
    """A number line has its own comment, or sits in a paragraph where a comment came before."""
    paragraph_has_comment = False
    for line in (TARGETS_DIR / f"{name}.toml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            paragraph_has_comment = False
        elif "#" in stripped:
            paragraph_has_comment = True
        elif NUMBER.match(line) and "#" not in line:
            assert paragraph_has_comment, f"{name}.toml: unsourced number: {line}"


def _user_copy(tmp_path: Path, name: str, edit=lambda s: s) -> Path:  # noqa: ANN001
    p = tmp_path / "my-board.toml"
    p.write_text(edit((TARGETS_DIR / f"{name}.toml").read_text()))
    return p


def test_a_users_file_works_by_path(tmp_path: Path) -> None:
    p = _user_copy(tmp_path, "cortex-m7", lambda s: s.replace('name = "cortex-m7"', 'name = "my-board"')
                   .replace("sram_bytes = 524288", "sram_bytes = 262144"))
    t = load_target(str(p))
    assert t.name == "my-board" and isinstance(t.hw, MCU) and t.hw.sram_bytes == 262144
    assert load_target(p).path == p


def test_unknown_target_names_the_known_ones() -> None:
    with pytest.raises(TargetError, match=r"unknown target 'cortex-m99' \(known: analog-pcm, .*cortex-m7"):
        load_target("cortex-m99")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.replace("sram_bytes = 524288", ""), "field 'mcu.sram_bytes' is missing"),
    (lambda s: s.replace("clock_hz = 4.8e8", 'clock_hz = "fast"'), "field 'mcu.clock_hz' must be a number"),
    (lambda s: s.replace("clock_hz = 4.8e8", "clock_hz = -1"), "field 'mcu.clock_hz' must not be negative"),
    (lambda s: s.replace('kind = "mcu"', 'kind = "tpu"'), "field 'kind' must be one of cpu, gpu, mcu, fpga, analog"),
    (lambda s: s.replace("clock_hz = 4.8e8", "clock_hz = 4.8e8\nclok = 1"), "field 'mcu.clok' is not part of"),
    (lambda s: s.replace("conv = { int8", "conv = { int7"), "field 'mcu.macs_per_cycle.conv.int7' is not a precision"),
    (lambda s: s.split("[mcu]")[0], "field 'mcu' is missing"),
    (lambda s: s + "\n[[[", "not valid TOML"),
])
def test_a_wrong_field_is_named(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    p = _user_copy(tmp_path, "cortex-m7", edit)
    with pytest.raises(TargetError, match=re.escape(message)) as e:
        load_target(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="target file not found"):
        load_target(tmp_path / "none.toml")
