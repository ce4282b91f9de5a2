"""Targets are data: one TOML file per hardware target, read into typed dataclasses.

The files shipped with hwnas live in `hwnas/backends/targets/`; `load_target` takes one of
their names (`cortex-m7`) or the path of a user's own file (`./my-board.toml`). The schema
is the dataclasses below: `kind` picks the section a file must have (`[roofline]` for cpu
and gpu, `[mcu]`, `[fpga]`, `[analog]`). A missing or wrongly typed field is reported
with its dotted path. Precision keys are `fp32`, `fp16`, `bf16`, `int16`, `int8`, `int4`,
`int2`; every rate is per second, sizes are bytes, energies joules unless a name says pJ.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hwnas.errors import TargetError

TARGETS_DIR = Path(__file__).parent / "targets"
Kind = Literal["cpu", "gpu", "mcu", "fpga", "analog"]
PRECISIONS = ("int2", "int4", "int8", "int16", "fp16", "bf16", "fp32")


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    size_bytes: float
    bandwidth_bytes_per_s: float
    pj_per_byte: float


@dataclass(frozen=True)
class Roofline:
    """CPU and GPU: peak arithmetic per precision, a memory hierarchy, kernel overheads."""

    peak_ops_per_s: dict[str, float]
    """Operations (a MAC is two) per second at each precision the datapath has."""
    memory: list[MemoryLevel]
    """Smallest level first; the last one holds the model (its size is the capacity)."""
    kernel_overhead_s: float
    """Fixed cost of launching one kernel (a GPU launch, a CPU operator dispatch)."""
    pj_per_op: dict[str, float]
    static_w: float
    depthwise_efficiency: float = 1.0
    """Fraction of peak a depthwise convolution reaches (little reuse, poor vectorization)."""


@dataclass(frozen=True)
class MCU:
    clock_hz: float
    sram_bytes: float
    flash_bytes: float
    macs_per_cycle: dict[str, dict[str, float]]
    """Per kernel kind (conv, depthwise, gemm, elementwise, pool), per precision."""
    layer_overhead_cycles: float
    code_bytes_base: float
    code_bytes_per_kernel: float
    active_w: float


@dataclass(frozen=True)
class FPGA:
    clock_hz: float
    dsp: int
    bram_18k: int
    lut: int
    reuse_factor: int | str
    """Multiplications per multiplier per input; "auto" picks the smallest power of two that fits."""
    mults_per_dsp: dict[str, float]
    """Multiplications one DSP slice does per cycle at each precision (0: not on DSPs)."""
    lut_per_mult: dict[str, float]
    """LUTs per multiplier: glue for DSP multipliers, the whole multiplier below DSP widths."""
    lut_per_layer: float
    bram_bits: float
    pj_per_mac: dict[str, float]
    pj_per_bram_bit: float
    static_w: float
    offchip_bandwidth_bytes_per_s: float
    float_precision: str = "int16"
    """What float layers run as: hls4ml designs use fixed point (ap_fixed<16,6> by default)."""


@dataclass(frozen=True)
class Analog:
    """A crossbar chip: weight-stationary tiles with DACs on rows and shared ADCs on columns."""

    tile_rows: int
    tile_cols: int
    tiles: int
    devices_per_weight: int
    dac_bits: int
    adc_bits: int
    input_bits_per_slice: int
    """Bits of each input applied per read: dac_bits for a multi-level DAC, 1 for bit-serial."""
    adcs_per_tile: int
    dac_energy_j: float
    dac_time_s: float
    adc_energy_j: float
    adc_time_s: float
    array_read_energy_j: float
    array_time_s: float
    digital: Roofline
    """The chip's digital core: partial sums, activations and every op that is not an MVM."""


@dataclass(frozen=True)
class Compile:
    pipeline: str = "canonicalize"
    runtime: str = "onnxruntime"


@dataclass(frozen=True)
class Target:
    name: str
    kind: Kind
    description: str
    skips_zeros: bool = False
    """The hardware skips zero weights, so unstructured sparsity lowers its cost."""
    compile: Compile = field(default_factory=Compile)
    roofline: Roofline | None = None
    mcu: MCU | None = None
    fpga: FPGA | None = None
    analog: Analog | None = None
    path: Path | None = None

    def integer_widths(self) -> set[int] | None:
        """The integer widths the target computes in, or None where it does not say (analog)."""
        if self.roofline is not None:
            keys = set(self.roofline.peak_ops_per_s)
        elif self.mcu is not None:
            keys = {p for table in self.mcu.macs_per_cycle.values() for p in table}
        elif self.fpga is not None:
            keys = {p for p, m in self.fpga.mults_per_dsp.items() if m} | set(self.fpga.lut_per_mult)
        else:
            return None
        return {int(k[3:]) for k in keys if k.startswith("int")}

    def check_integer_bits(self, bits: Iterable[int]) -> None:
        """Refuses widths that no integer datapath of the target holds."""
        widths = self.integer_widths()
        if widths is None:
            return
        for b in bits:
            if not any(w >= b for w in widths):
                have = ", ".join(f"int{w}" for w in sorted(widths)) or "none"
                raise TargetError(f"target '{self.name}' cannot run {b}-bit integers (integer datapaths: {have})")


_SECTION = {"cpu": "roofline", "gpu": "roofline", "mcu": "mcu", "fpga": "fpga", "analog": "analog"}


def available_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def load_target(name_or_path: str | Path) -> Target:
    """A shipped target by name, or a user's TOML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or "/" in text):
        path = TARGETS_DIR / f"{text}.toml"
        if not path.is_file():
            raise TargetError(f"unknown target '{text}' (known: {', '.join(available_targets())}; "
                              f"or give the path of a .toml file)")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TargetError(f"{path}: target file not found") from None
    except OSError as e:
        raise TargetError(f"{path}: cannot read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise TargetError(f"{path}: not a text file") from None
    try:
        target = _build(Target, data, "")
    except _FieldError as e:
        raise TargetError(f"{path}: {e}") from None
    section = _SECTION[target.kind]
    if getattr(target, section) is None:
        raise TargetError(f"{path}: field '{section}' is missing (a {target.kind} target needs a [{section}] section)")
    return dataclasses.replace(target, path=path)


class _FieldError(ValueError):
    pass


def _build(cls: type, data: object, where: str) -> object:
    """Build dataclass `cls` from TOML data, checking every field against its type hint."""
    if not isinstance(data, dict):
        raise _FieldError(f"field '{where}' must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _FieldError(f"field '{_join(where, unknown[0])}' is not part of the schema")
    kwargs = {}
    for name, f in fields.items():
        at = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _FieldError(f"field '{at}' is missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], at)
    return cls(**kwargs)


def _convert(hint: object, value: object, at: str) -> object:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, at)
            except _FieldError as e:
                errors.append(str(e))
        raise _FieldError(errors[0] if len(errors) == 1 else f"field '{at}' has the wrong type: {value!r}")
    if origin is Literal:
        if value not in args:
            raise _FieldError(f"field '{at}' must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _FieldError(f"field '{at}' must be an array")
        return [_convert(args[0], v, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _FieldError(f"field '{at}' must be a table")
        out = {}
        for k, v in value.items():
            if args[1] is float and k not in PRECISIONS and at.rpartition(".")[2] in _PRECISION_TABLES:
                raise _FieldError(f"field '{at}.{k}' is not a precision (use {', '.join(PRECISIONS)})")
            out[k] = _convert(args[1], v, f"{at}.{k}")
        return out
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, at)  # type: ignore[arg-type]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _FieldError(f"field '{at}' must be a number, not {value!r}")
        if value < 0:
            raise _FieldError(f"field '{at}' must not be negative, not {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _FieldError(f"field '{at}' must be a positive integer, not {value!r}")
        return value
    if hint is str and not isinstance(value, str):
        raise _FieldError(f"field '{at}' must be a string, not {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise _FieldError(f"field '{at}' must be true or false, not {value!r}")
    return value


# Tables keyed by precision; their keys are checked against PRECISIONS.
_PRECISION_TABLES = {"peak_ops_per_s", "pj_per_op", "mults_per_dsp", "lut_per_mult", "pj_per_mac", "conv", "depthwise",
                     "gemm", "elementwise", "pool"}


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
