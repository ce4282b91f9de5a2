"""Targets are data: one TOML file per hardware target, read into typed dataclasses.

The files shipped with hwnas live in `hwnas/backends/targets/`; `load_target` takes one of
their names (`cortex-m7`) or the path of a user's own file (`./my-board.toml`). A file's
`kind` picks its hardware section: each kind registers the dataclass of that section with
`@hardware_kind` (cpu and gpu share `[roofline]`; `[mcu]`, `[fpga]`, `[analog]`), and the
section's fields are checked against the dataclass's type hints. A missing or wrongly typed
field is reported with its dotted path. Precision keys are `fp32`, `fp16`, `bf16`, `int16`,
`int8`, `int4`, `int2`; every rate is per second, sizes are bytes, energies joules unless a
name says pJ.

A kind that hwnas does not ship comes from the user's own module (a hardware dataclass with
`@hardware_kind` and a cost model with `hwnas.backends.cost.cost_model`): import it before
loading its targets, or name it in the entry-point group `hwnas.target_kinds` of an installed
package (`toy = "my_package.toy"`), which `load_target` imports when it meets that kind.

`machine` names the CPU a file's figures were measured on (`hwnas.backends.measure.cpu_model()`),
so that a report priced with them can say when they describe another machine. `machine = "host"`
(the shipped `host-cpu`) means this machine: its peak rates, depthwise efficiency, kernel
overhead and memory levels are measured on first use by `hwnas.backends.host` (seconds, then
cached per CPU, thread count and onnxruntime version); the file gives only what cannot be
measured (energies, static power). Other files load without measuring anything.
"""

from __future__ import annotations

import dataclasses
import importlib
import tomllib
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Literal, Protocol, TypeVar

from hwnas.errors import TargetError

TARGETS_DIR = Path(__file__).parent / "targets"
PRECISIONS = ("int2", "int4", "int8", "int16", "fp16", "bf16", "fp32")
ENTRY_POINT_GROUP = "hwnas.target_kinds"
HOST_MACHINE = "host"
"""`machine = "host"`: the roofline is this machine's, measured on first use."""
_MEASURED_FIELDS = ("peak_ops_per_s", "kernel_overhead_s", "depthwise_efficiency")

PRECISION_KEYED = "precision-keyed"
PerPrecision = Annotated[dict[str, float], PRECISION_KEYED]
"""A table keyed by precision (`{ fp32 = 2.4e11, int8 = 8.4e11 }`): its keys are checked
against PRECISIONS."""


class Hardware(Protocol):
    """What every hardware section answers, whatever its kind."""

    def integer_widths(self) -> set[int] | None:
        """The integer widths the hardware computes in, or None where it does not say."""
        ...


H = TypeVar("H")


@dataclass(frozen=True)
class KindInfo:
    """A registered kind of target: its name, the TOML section it reads and that section's dataclass."""

    name: str
    section: str
    hardware: type


_KINDS: dict[str, KindInfo] = {}


def hardware_kind(*kinds: str, section: str | None = None) -> Callable[[type[H]], type[H]]:
    """Class decorator: the frozen dataclass is the hardware section of targets of `kinds`,
    read from the TOML table `section` (default: the kind's name). The class must answer
    `integer_widths()` (see `Hardware`)."""
    if not kinds:
        raise TypeError("hardware_kind needs at least one kind name")

    def register(cls: type[H]) -> type[H]:
        if not dataclasses.is_dataclass(cls) or not callable(getattr(cls, "integer_widths", None)):
            raise TypeError(f"{cls.__qualname__}: a hardware section is a dataclass with an integer_widths() method")
        for kind in kinds:
            old = _KINDS.get(kind)
            if old is not None and _qualified(old.hardware) != _qualified(cls):
                raise TypeError(f"kind '{kind}' is already registered by {_qualified(old.hardware)}")
            _KINDS[kind] = KindInfo(kind, section or kind, cls)
        return cls

    return register


def available_kinds() -> list[str]:
    """The registered kinds, in the order they were registered (the built-in ones first)."""
    return list(_KINDS)


def kind_info(kind: str) -> KindInfo:
    """The registration of `kind`; refuses an unknown kind in one line naming the known ones."""
    info = _find_kind(kind)
    if info is None:
        raise TargetError(f"unknown kind '{kind}' ({_known_kinds()})")
    return info


def _find_kind(kind: str) -> KindInfo | None:
    """The registration of `kind`, importing the module an installed package names for it in
    the entry-point group `hwnas.target_kinds` when no module has registered it yet."""
    if kind not in _KINDS:
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
            try:
                ep.load()
            except Exception as e:  # the user's module: whatever it raises
                raise TargetError(f"kind '{kind}': cannot import {ep.value} (entry point {ENTRY_POINT_GROUP}: "
                                  f"{type(e).__name__}: {e})") from None
            break
    return _KINDS.get(kind)


def _known_kinds() -> str:
    return f"known: {', '.join(_KINDS)}; a new kind registers its section with @hardware_kind"


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _integer_widths(keys: Iterable[str]) -> set[int]:
    return {int(k[3:]) for k in keys if k.startswith("int")}


@dataclass(frozen=True)
class MemoryLevel:
    """One level of a memory hierarchy: its capacity, bandwidth and energy per byte moved."""

    name: str
    size_bytes: float
    bandwidth_bytes_per_s: float
    pj_per_byte: float


@hardware_kind("cpu", "gpu", section="roofline")
@dataclass(frozen=True)
class Roofline:
    """CPU and GPU: peak arithmetic per precision, a memory hierarchy, kernel overheads."""

    peak_ops_per_s: PerPrecision
    """Operations (a MAC is two) per second at each precision the datapath has."""
    memory: list[MemoryLevel]
    """Smallest level first; the last one holds the model (its size is the capacity)."""
    kernel_overhead_s: float
    """Fixed cost of launching one kernel (a GPU launch, a CPU operator dispatch)."""
    pj_per_op: PerPrecision
    static_w: float
    depthwise_efficiency: float = 1.0
    """Fraction of peak a depthwise convolution reaches (little reuse, poor vectorization)."""
    execution_provider: str = ""
    """The runtime whose kernels the figures assume, as onnxruntime names its execution providers
    (CUDAExecutionProvider, TensorrtExecutionProvider, CPUExecutionProvider); '' where unsaid."""
    qdq: Literal["integer", "dequantize"] = "integer"
    """How that runtime runs a QDQ-quantized node: "integer" fuses DequantizeLinear, the op and
    QuantizeLinear into one integer kernel at the int peak (onnxruntime's CPU EP, TensorRT);
    "dequantize" runs each Q/DQ as a kernel of its own and the op in float (onnxruntime's CUDA EP,
    whose only integer kernel is MatMulInteger)."""

    def integer_widths(self) -> set[int]:
        """The integer precisions with a peak rate."""
        return _integer_widths(self.peak_ops_per_s)


@hardware_kind("mcu")
@dataclass(frozen=True)
class MCU:
    """A microcontroller: clock, SRAM and flash, MACs per cycle per kernel kind, per-layer overhead."""

    clock_hz: float
    sram_bytes: float
    flash_bytes: float
    macs_per_cycle: dict[str, PerPrecision]
    """Per kernel kind (conv, depthwise, gemm, elementwise, pool), per precision."""
    layer_overhead_cycles: float
    code_bytes_base: float
    code_bytes_per_kernel: float
    active_w: float

    def integer_widths(self) -> set[int]:
        """The integer precisions any kernel kind has a rate for."""
        return _integer_widths(p for table in self.macs_per_cycle.values() for p in table)


@hardware_kind("fpga")
@dataclass(frozen=True)
class FPGA:
    """An FPGA running a layer-per-stage dataflow design: its resources, multiplier costs, clock."""

    clock_hz: float
    dsp: int
    bram_18k: int
    lut: int
    reuse_factor: int | str
    """Multiplications per multiplier per input; "auto" picks the smallest power of two that fits."""
    mults_per_dsp: PerPrecision
    """Multiplications one DSP slice does per cycle at each precision (0: not on DSPs)."""
    lut_per_mult: PerPrecision
    """LUTs per multiplier: glue for DSP multipliers, the whole multiplier below DSP widths."""
    lut_per_layer: float
    bram_bits: float
    pj_per_mac: PerPrecision
    pj_per_bram_bit: float
    static_w: float
    offchip_bandwidth_bytes_per_s: float
    """DDR bandwidth: the layer-by-layer design streams weights (and activations that exceed BRAM) at it."""
    float_precision: str = "int16"
    """What float layers run as: hls4ml designs use fixed point (ap_fixed<16,6> by default)."""
    mode: Literal["auto", "dataflow", "layer-by-layer"] = "auto"
    """"dataflow": every layer its own stage, weights on chip; "layer-by-layer": one compute engine
    sized to the device runs the layers in turn, weights streamed from DDR; "auto": dataflow where
    it fits, else layer by layer."""
    offchip_pj_per_byte: float = 160.0
    """Energy per byte moved to or from DDR (DDR4 with its PHY: about 20 pJ/bit)."""

    def integer_widths(self) -> set[int]:
        """Integer precisions on DSP slices or built from LUTs."""
        return _integer_widths({p for p, m in self.mults_per_dsp.items() if m} | set(self.lut_per_mult))


@dataclass(frozen=True)
class AnalogSimulation:
    """How `hwnas analog` simulates the tiles in aihwkit: the PCM device model (programming and
    read noise, conductance drift), global drift compensation and the periphery's ranges (the
    DAC and ADC resolutions are dac_bits and adc_bits)."""

    noise_model: Literal["pcm", "none"] = "pcm"
    """aihwkit's PCMLikeNoiseModel (fitted to IBM's PCM devices), or none: ideal conductances."""
    g_max_us: float = 25.0
    """Largest programmed conductance, µS."""
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    drift_compensation: bool = True
    """Global drift compensation: outputs rescaled by a reference read taken after drift."""
    input_bound: float = 1.0
    """DAC input range, in units of each input vector's largest magnitude (noise management)."""
    output_bound: float = 12.0
    """ADC output range, in units of a full-scale weight times a full-scale input."""
    output_noise: float = 0.04
    """Additive output noise (std) at the ADCs, in the same units."""


@hardware_kind("analog")
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
    simulation: AnalogSimulation = field(default_factory=AnalogSimulation)
    """[analog.simulation]: how aihwkit simulates the tiles (defaults when the file has none)."""

    def integer_widths(self) -> None:
        """None: the crossbars' widths are set by DACs and ADCs, not by integer datapaths."""
        return None


@dataclass(frozen=True)
class Compile:
    """How `hwnas compile` builds for the target: its default pipeline, the precision the
    device computes in, the runtime and the TVM target."""

    pipeline: str = "canonicalize"
    """The pass pipeline spec (`canonicalize,quantize{w_bits=8}`) compile runs by default. A pass
    that calibrates (quantize) takes `--calib-data`; compile refuses to calibrate on random
    inputs unless told to (`--allow-random-calib`)."""
    precision: Literal["float", "int8"] = "float"
    """What the device runs: "int8" for integer kernels only (TFLite Micro with CMSIS-NN, an
    int8 onnxruntime build), whose pipeline quantizes; compile says so when a pipeline given
    instead leaves the model float. "float": float models run as they are."""
    runtime: str = "onnxruntime"
    """What runs the artifact: onnxruntime (an ONNX model) or tvm (a TVM library)."""
    tvm_target: str = ""
    """The TVM target string hwnas builds a TVM library for ("llvm", "cuda"); "" where it cannot."""


@dataclass(frozen=True)
class Target:
    """One target file, parsed: its name and kind, its hardware section (`hw`, the dataclass
    the kind registered) and how to compile for it."""

    name: str
    kind: str
    description: str
    hw: Hardware
    """The hardware section: a Roofline for cpu and gpu, an MCU, FPGA or Analog, or a user kind's own."""
    machine: str = ""
    """The CPU whose measurements the figures are ('' for figures that describe no one machine, such as a
    datasheet's); after loading a `machine = "host"` file, this machine's CPU."""
    skips_zeros: bool = False
    """The hardware skips zero weights, so unstructured sparsity lowers its cost."""
    compile: Compile = field(default_factory=Compile)
    path: Path | None = None

    def section(self, cls: type[H]) -> H:
        """The hardware section as a `cls`, for a cost model that prices that class; refuses
        a target of another kind in one line."""
        if not isinstance(self.hw, cls):
            raise TargetError(f"target '{self.name}' is a {self.kind} target: its section is "
                              f"{type(self.hw).__name__}, not {cls.__name__}")
        return self.hw

    @property
    def roofline(self) -> Roofline | None:
        """The roofline of a cpu or gpu target, None for other kinds (calibration reads it)."""
        return self.hw if isinstance(self.hw, Roofline) else None

    def integer_widths(self) -> set[int] | None:
        """The integer widths the target computes in, or None where it does not say (analog)."""
        return self.hw.integer_widths()

    def check_integer_bits(self, bits: Iterable[int]) -> None:
        """Refuses widths that no integer datapath of the target holds."""
        widths = self.integer_widths()
        if widths is None:
            return
        for b in bits:
            if not any(w >= b for w in widths):
                have = ", ".join(f"int{w}" for w in sorted(widths)) or "none"
                raise TargetError(f"target '{self.name}' cannot run {b}-bit integers (integer datapaths: {have})")


def available_targets() -> list[str]:
    """The names of the target files shipped with hwnas."""
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
        return _build_target(data, path)
    except _FieldError as e:
        raise TargetError(f"{path}: {e}") from None


class _FieldError(ValueError):
    pass


def _build_target(data: dict[str, object], path: Path) -> Target:
    """The common fields, then the section that the file's kind registered."""
    kind = data.get("kind")
    if kind is None:
        raise _FieldError("field 'kind' is missing")
    if not isinstance(kind, str):
        raise _FieldError(f"field 'kind' must be a string, not {kind!r}")
    info = _find_kind(kind)
    if info is None:
        raise _FieldError(f"field 'kind' must be one of {', '.join(_KINDS)}, not {kind!r} "
                          f"(a new kind registers its section with @hardware_kind)")
    common = {k: v for k, v in data.items() if k != info.section}
    target = _build(Target, common, "", given={"hw": None, "path": path})
    if info.section not in data:
        raise _FieldError(f"field '{info.section}' is missing (a {kind} target needs a [{info.section}] section)")
    section = data[info.section]
    if target.machine == HOST_MACHINE:
        if kind != "cpu":
            raise _FieldError(f"field 'machine': \"{HOST_MACHINE}\" (measured on this machine) is for cpu targets, "
                              f"not {kind}")
        # The file's own fields are checked before the seconds of measuring.
        levels = section.get("memory") if isinstance(section, dict) else None
        names = [lv.get("name") for lv in levels if isinstance(lv, dict)] if isinstance(levels, list) else []
        placeholder = {"peak_ops_per_s": {"fp32": 1.0}, "kernel_overhead_s": 0.0, "depthwise_efficiency": 1.0,
                       "memory": [(str(n), 1.0, 1.0) for n in names]}
        _build(info.hardware, _with_measured(section, info.section, placeholder), info.section)
        host = _host_module().host_roofline()
        measured = {"peak_ops_per_s": host.peak_ops_per_s, "kernel_overhead_s": host.kernel_overhead_s,
                    "depthwise_efficiency": host.depthwise_efficiency,
                    "memory": [(m.name, m.size_bytes, m.bandwidth_bytes_per_s) for m in host.memory]}
        section = _with_measured(section, info.section, measured)
        target = dataclasses.replace(target, machine=host.machine)
    hw = _build(info.hardware, section, info.section)
    if kind == "gpu" and isinstance(hw, Roofline) and not hw.execution_provider:
        # A GPU's figures differ by runtime (a QDQ node dequantized by onnxruntime's CUDA EP, int8 under TensorRT).
        raise _FieldError(f"field '{info.section}.execution_provider' is missing: a gpu target names the runtime "
                          f"its figures assume (CUDAExecutionProvider, TensorrtExecutionProvider)")
    return dataclasses.replace(target, hw=hw)


def _host_module() -> typing.Any:
    """`hwnas.backends.host`, imported by name on first use, as the cost package imports its
    models: it measures through `backends.measure`, whose TVM runner reads targets, so a plain
    import would close a circle (target -> host -> measure -> target)."""
    return importlib.import_module("hwnas.backends.host")


def _with_measured(section: object, where: str, measured: dict[str, typing.Any]) -> object:
    """A `machine = "host"` roofline section with the measured fields filled in: the file must not
    give them, and its memory levels give only `name` and `pj_per_byte` (a measured level the file
    does not name takes the last level's energy)."""
    if not isinstance(section, dict):
        return section  # _build says it must be a table
    again = "remove it, or give every figure yourself without machine = \"host\""
    for name in _MEASURED_FIELDS:
        if name in section:
            raise _FieldError(f"field '{where}.{name}' is measured on this machine (machine = \"host\"); {again}")
    levels = section.get("memory")
    if not isinstance(levels, list) or not levels:
        raise _FieldError(f"field '{where}.memory' must be an array of tables with the name and pj_per_byte of "
                          f"each level (L2, L3, DRAM: their sizes and bandwidths are measured)")
    for i, level in enumerate(levels):
        at = f"{where}.memory[{i}]"
        if not isinstance(level, dict):
            raise _FieldError(f"field '{at}' must be a table")
        extra = sorted(set(level) - {"name", "pj_per_byte"})
        if extra:
            raise _FieldError(f"field '{at}.{extra[0]}' is measured on this machine (machine = \"host\"); {again}")
        for key in ("name", "pj_per_byte"):
            if key not in level:
                raise _FieldError(f"field '{at}.{key}' is missing")
    pj = {level["name"]: level["pj_per_byte"] for level in levels}
    memory = [{"name": n, "size_bytes": size, "bandwidth_bytes_per_s": bw,
               "pj_per_byte": pj.get(n, levels[-1]["pj_per_byte"])} for n, size, bw in measured["memory"]]
    return {**section, **{k: measured[k] for k in _MEASURED_FIELDS}, "memory": memory}


def _build(cls: type, data: object, where: str, given: dict[str, object] | None = None) -> typing.Any:
    """Build dataclass `cls` from TOML data, checking every field against its type hint;
    fields in `given` are not read from the data."""
    if not isinstance(data, dict):
        raise _FieldError(f"field '{where}' must be a table")
    given = given or {}
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in given}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _FieldError(f"field '{_join(where, unknown[0])}' is not part of the schema")
    kwargs = dict(given)
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
    if origin is Annotated:
        if PRECISION_KEYED in args[1:] and isinstance(value, dict):
            bad = [k for k in value if k not in PRECISIONS]
            if bad:
                raise _FieldError(f"field '{at}.{bad[0]}' is not a precision (use {', '.join(PRECISIONS)})")
        return _convert(args[0], value, at)
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
        return {k: _convert(args[1], v, f"{at}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, at)
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


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
