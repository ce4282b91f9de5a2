"""AnalogNAS-Bench: CIFAR-10 accuracies of all 15,625 NAS-Bench-201 cells, read as a table.

The `analog-nasbench` package ships `analognasbench/data.anb`, a pickle of a dict from a
6-tuple of op indices to an `Architecture` record (baseline, PTQ, QAT, noisy and analog
accuracy, and drift accuracies "value ± uncertainty" at 60 s, 1 h, 1 day and 30 days, for the
baseline and the analog-trained network). We never `pickle.load` it: a restricted unpickler
admits exactly its two record classes, rebuilt as plain attribute holders, and nothing else,
so the file cannot run code. The package itself is not imported (it pulls pandas and
`pkg_resources`); only its data file is located.

Tuple order. Op indices are NASLib's (0 skip, 1 zeroize, 2 conv3x3, 3 conv1x1, 4 avgpool3x3)
and so is the edge order: (0,1), (0,2), (0,3), (1,2), (1,3), (2,3), which differs from the arch
string's (0,1), (0,2), (1,2), (0,3), (1,3), (2,3). The data say so: exactly the 341 cells whose
output node cannot be reached from the input through non-zeroize edges sit at 10% (chance),
under this order; the arch-string order would misplace 260 of them. Of the 720 edge orders
only this one and its mirror (node i -> 3 - i, which no accuracy can tell apart) explain the
341; NASLib's convention, whose op coding the file shares, picks this one.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import DataError
from hwnas.search.spaces import nasbench201 as nb201

ANB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
"""The op of each AnalogNAS-Bench op index."""
ANB_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
"""The edge (from, to) of each position of an AnalogNAS-Bench tuple (NASLib's order)."""

ACCURACIES = ("baseline_accuracy", "ptq_accuracy", "qat_accuracy", "noisy_accuracy", "analog_accuracy")
DRIFTS = tuple(f"{kind}_drift_{t}" for kind in ("baseline", "analog") for t in (60, 3600, 86400, 2592000))
METRICS = ACCURACIES + DRIFTS
"""Every metric of the table, in percent top-1 CIFAR-10 accuracy."""
CHANCE = 10.0  # percent, ten classes


class BenchFileError(DataError):
    """The bench file is missing, corrupt, or not an AnalogNAS-Bench table."""


class _Record:
    """An attribute holder that stands in for the file's record classes; the unpickler's
    BUILD fills its __dict__, and no code of the file's package runs."""


class _Architecture(_Record):
    pass


class _DriftMeasurement(_Record):
    pass


_ALLOWED = {("analognasbench.data", "Architecture"): _Architecture,
            ("analognasbench.data", "DriftMeasurement"): _DriftMeasurement}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None


def default_path() -> Path:
    """The `data.anb` shipped by the `analog-nasbench` package, located without importing it."""
    spec = importlib.util.find_spec("analognasbench")
    if spec is None or not spec.submodule_search_locations:
        raise BenchFileError("the analog-nasbench package is not installed (pip install analog-nasbench)")
    return Path(next(iter(spec.submodule_search_locations))) / "data.anb"


def anb_to_arch(ops: tuple[int, ...]) -> str:
    """The NB201 arch string of an AnalogNAS-Bench tuple."""
    by_edge = {edge: ANB_OPS[i] for edge, i in zip(ANB_EDGES, ops, strict=True)}
    return nb201.format_arch(nb201.Cell(tuple(by_edge[e] for e in nb201.EDGES)))


def arch_to_anb(arch: str | nb201.Cell) -> tuple[int, ...]:
    """The AnalogNAS-Bench tuple of an NB201 arch string or cell."""
    cell = nb201.parse_arch(arch) if isinstance(arch, str) else arch
    return tuple(ANB_OPS.index(cell.edge(i, j)) for i, j in ANB_EDGES)


def output_disconnected(arch: str | nb201.Cell) -> bool:
    """Whether no path of non-`none` edges leads from the cell's input to its output."""
    cell = nb201.parse_arch(arch) if isinstance(arch, str) else arch
    reached = {0}
    for j in range(1, nb201.NUM_NODES):
        if any(i in reached and cell.edge(i, j) != "none" for i in range(j)):
            reached.add(j)
    return nb201.NUM_NODES - 1 not in reached


@dataclass(frozen=True)
class Issue:
    """One row the sanity checks flagged: its arch string, the metric, the kind of problem
    (what the summary counts) and the detail."""

    arch: str
    metric: str
    problem: str
    detail: str = ""


@dataclass
class AnalogNASBench:
    """The table: `values[i, m]` and `uncertainty[i, m]` for the i-th arch of
    `nasbench201.arch_from_index` and the m-th of `METRICS` (NaN where the file lacks it; 0
    uncertainty for the single-run accuracies). `issues` lists what the sanity checks found."""

    values: np.ndarray
    uncertainty: np.ndarray
    issues: list[Issue] = field(default_factory=list)
    path: str = ""

    def __post_init__(self) -> None:
        self._column = {m: k for k, m in enumerate(METRICS)}
        self._row: dict[str, int] = {}

    def _index(self, arch: str | nb201.Cell) -> int:
        key = arch if isinstance(arch, str) else nb201.format_arch(arch)
        row = self._row.get(key)
        if row is None:
            row = self._row[key] = nb201.arch_index(key)
        return row

    def column(self, metric: str) -> int:
        """The column of `metric`; BenchFileError names the known ones for an unknown one."""
        try:
            return self._column[metric]
        except KeyError:
            raise BenchFileError(f"unknown AnalogNAS-Bench metric '{metric}' (known: {', '.join(METRICS)})") from None

    def query(self, arch: str | nb201.Cell, metric: str = "baseline_accuracy") -> float:
        """The metric (percent) of one cell, in microseconds."""
        return float(self.values[self._index(arch), self.column(metric)])

    def query_uncertainty(self, arch: str | nb201.Cell, metric: str) -> float:
        """The uncertainty the file gives with the metric (0 for single-run accuracies)."""
        return float(self.uncertainty[self._index(arch), self.column(metric)])

    def summary(self) -> str:
        """Rows and issues in a few lines: counts per problem, then the first few issues."""
        counts: dict[str, int] = {}
        for issue in self.issues:
            counts[issue.problem] = counts.get(issue.problem, 0) + 1
        lines = [f"AnalogNAS-Bench {self.path}: {len(self.values)} cells, {len(METRICS)} metrics, "
                 f"{len(self.issues)} issue(s)"]
        lines += [f"  {n} x {problem}" for problem, n in sorted(counts.items())]
        lines += [f"  e.g. {i.arch} {i.metric}: {i.problem} {i.detail}".rstrip() for i in self.issues[:5]]
        return "\n".join(lines)


def _number(x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return math.nan
    return float(x)


def _parse(data: object, where: str) -> AnalogNASBench:
    if not isinstance(data, dict) or len(data) != nb201.NUM_ARCHS:
        size = len(data) if isinstance(data, dict) else type(data).__name__
        raise BenchFileError(f"{where}: not an AnalogNAS-Bench table (expected a dict of "
                             f"{nb201.NUM_ARCHS} cells, got {size})")
    values = np.full((nb201.NUM_ARCHS, len(METRICS)), math.nan)
    uncertainty = np.zeros_like(values)
    issues: list[Issue] = []
    for key, record in data.items():
        if not (isinstance(key, tuple) and len(key) == 6 and all(type(i) is int and 0 <= i < 5 for i in key)):
            raise BenchFileError(f"{where}: key {key!r} is not a 6-tuple of op indices 0..4")
        if not isinstance(record, _Architecture):
            raise BenchFileError(f"{where}: the record of {key} is a {type(record).__name__}, not an Architecture")
        arch = anb_to_arch(key)
        row = nb201.arch_index(arch)
        fields = vars(record)
        if fields.get("architecture") != key:
            issues.append(Issue(arch, "architecture", "key mismatch", f"record says {fields.get('architecture')!r}"))
        for col, metric in enumerate(METRICS):
            if metric not in fields:
                issues.append(Issue(arch, metric, "missing"))
                continue
            raw = fields[metric]
            if isinstance(raw, _DriftMeasurement):
                value, unc = _number(vars(raw).get("value")), _number(vars(raw).get("uncertainty"))
            else:
                value, unc = _number(raw), 0.0
            if math.isnan(value) or math.isnan(unc):
                issues.append(Issue(arch, metric, "not a number"))
                continue
            if not 0.0 <= value <= 100.0 or unc < 0.0:
                issues.append(Issue(arch, metric, "out of range", f"{value} ± {unc} (expected [0, 100] ± >= 0)"))
                continue
            values[row, col], uncertainty[row, col] = value, unc
        # A cell whose output sees no input is a constant function: it cannot beat chance.
        base = values[row, 0]
        if output_disconnected(arch) and base > CHANCE + 1.0:
            issues.append(Issue(arch, "baseline_accuracy", "above chance with no input",
                                f"{base:.2f}% for a cell whose output sees no input"))
    return AnalogNASBench(values, uncertainty, issues, where)


@functools.lru_cache(maxsize=4)
def load(path: str | None = None) -> AnalogNASBench:
    """Read the bench file (the package's by default) through the restricted unpickler and
    check it; a missing, corrupt or foreign file raises BenchFileError (one line)."""
    where = str(path) if path is not None else str(default_path())
    try:
        with open(where, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except FileNotFoundError:
        raise BenchFileError(f"{where}: no such bench file") from None
    except OSError as e:
        raise BenchFileError(f"{where}: cannot read ({e.strerror})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, ImportError, UnicodeDecodeError, OverflowError) as e:
        raise BenchFileError(f"{where}: not an AnalogNAS-Bench file ({type(e).__name__}: {e})"[:300]) from None
    return _parse(data, where)
