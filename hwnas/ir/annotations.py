"""Typed annotation slots that passes fill in and cost models read.

Each slot is a frozen dataclass; a node holds at most one of each kind. They print and
parse as JSON objects so a dump carries them.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, ClassVar


class Granularity(enum.Enum):
    """Whether weights share one scale (per tensor) or have one per output channel."""

    PER_TENSOR = "per-tensor"
    PER_CHANNEL = "per-channel"


@dataclass(frozen=True, slots=True)
class FusedActivation:
    """This node and the activation that follows it run as one kernel."""

    key: ClassVar[str] = "fused_activation"
    op: str
    node: str
    """Name of the activation node that is fused into this one."""


@dataclass(frozen=True, slots=True)
class FusedInto:
    """This activation runs inside the kernel of another node."""

    key: ClassVar[str] = "fused_into"
    node: str


@dataclass(frozen=True, slots=True)
class QuantSpec:
    """Weight and activation precision chosen for a node. Weights are symmetric (scales
    computed from the weights when emitted, by `method`); the data input is asymmetric
    per-tensor, with the scale and zero point that calibration picked (None: not yet)."""

    key: ClassVar[str] = "quant"
    w_bits: int | None = None
    a_bits: int | None = None
    w_granularity: Granularity = Granularity.PER_CHANNEL
    symmetric: bool = True
    method: str = "minmax"
    """How ranges were chosen: minmax, percentile or mse (weights: mse, else max-abs)."""
    a_scale: float | None = None
    a_zero_point: int | None = None
    o_scale: float | None = None
    """8-bit grid of the node's output (after a Relu or Clip that follows it), so integer
    kernels can produce integers; None: the output stays float."""
    o_zero_point: int | None = None


@dataclass(frozen=True, slots=True)
class SparsitySpec:
    """Pruning applied to a node's weights."""

    key: ClassVar[str] = "sparsity"
    weight_sparsity: float = 0.0
    structured: bool = False
    kept_channels: int | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a node runs, and on which crossbar tiles when it is analog (`map-analog` fills it).

    The layer's weights are one matrix of rows = Cin·kh·kw and columns = Cout (block-diagonal
    over groups: group g holds rows g·Cin/group·kh·kw.. and columns g·Cout/group..); each of
    `blocks` is one piece of it on one tile, `(tile, row_start, row_stop, col_start, col_stop,
    tile_row, tile_col)`: the matrix rows [row_start, row_stop) and columns [col_start, col_stop)
    sit on tile `tile` from its row `tile_row` and column `tile_col`. Blocks that share matrix
    columns but not rows give partial sums the digital core adds. `reason` says why a weight
    layer stays digital."""

    key: ClassVar[str] = "placement"
    target: str
    analog: bool = False
    tiles: int | None = None
    tile_rows: int | None = None
    tile_cols: int | None = None
    tile_ids: tuple[int, ...] = ()
    blocks: tuple[tuple[int, ...], ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        # JSON gives lists back: stored as tuples so a parsed placement equals the printed one.
        object.__setattr__(self, "tile_ids", tuple(int(t) for t in self.tile_ids))
        object.__setattr__(self, "blocks", tuple(tuple(int(x) for x in b) for b in self.blocks))


Annotation = FusedActivation | FusedInto | QuantSpec | SparsitySpec | Placement
ANNOTATION_TYPES: dict[str, type] = {
    cls.key: cls for cls in (FusedActivation, FusedInto, QuantSpec, SparsitySpec, Placement)
}


def annotation_to_dict(a: Any) -> dict[str, Any]:
    """The annotation's fields as a JSON-ready dict (enums as their values)."""
    out = {}
    for f in dataclasses.fields(a):
        v = getattr(a, f.name)
        out[f.name] = v.value if isinstance(v, enum.Enum) else v
    return out


def annotation_from_dict(key: str, data: dict[str, Any]) -> Any:
    """The annotation of slot `key` from its dict; unknown fields are ignored, an unknown
    slot is a ValueError."""
    cls = ANNOTATION_TYPES.get(key)
    if cls is None:
        raise ValueError(f"unknown annotation '{key}'")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            v = data[f.name]
            kwargs[f.name] = Granularity(v) if f.name == "w_granularity" else v
    return cls(**kwargs)
