"""Instruments watch passes run; they attach by argument to a `PassRunner`.

- `Timing`: wall time per pass (nested passes indented), printed as a table.
- `PrintIR`: the IR after the named passes (or all), as text.
- `DumpIR`: the IR after each pass into numbered files of a folder.
- `Verify`: the verifier after each pass; a failure names the pass that broke the graph.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hwnas.ir.graph import Graph
from hwnas.ir.text import print_graph
from hwnas.ir.verifier import VerificationError, verify

if TYPE_CHECKING:
    from hwnas.passes.base import Pass, PassResult


class Instrument:
    """Hooks a `PassRunner` calls around every pass, nested passes included (`depth` > 0);
    the base class does nothing, so a subclass overrides only what it needs."""

    def before_pass(self, p: Pass, graph: Graph, depth: int) -> None:
        """Called with the graph the pass is about to run on."""

    def after_pass(self, p: Pass, result: PassResult, seconds: float, depth: int) -> None:
        """Called with the pass's result and its wall time."""


@dataclass
class Timing(Instrument):
    """Records (depth, pass, seconds, changed) per pass run, in start order."""

    records: list[tuple[int, str, float, bool]] = field(default_factory=list)
    _open: list[int] = field(default_factory=list)

    def before_pass(self, p: Pass, graph: Graph, depth: int) -> None:
        self._open.append(len(self.records))
        self.records.append((depth, p.name, 0.0, False))

    def after_pass(self, p: Pass, result: PassResult, seconds: float, depth: int) -> None:
        i = self._open.pop()
        self.records[i] = (depth, p.name, seconds, result.changed)

    def totals(self) -> dict[str, float]:
        """Seconds per pass name, summed over its runs (leaf runs only for composites)."""
        out: dict[str, float] = {}
        for _, name, secs, _ in self.records:
            out[name] = out.get(name, 0.0) + secs
        return out

    def report(self) -> str:
        """The records as a table, nested passes indented under their parent."""
        lines = [f"{'pass':<40} {'seconds':>9}  changed"]
        for depth, name, secs, changed in self.records:
            lines.append(f"{'  ' * depth + name:<40} {secs:>9.4f}  {'yes' if changed else 'no'}")
        return "\n".join(lines)


@dataclass
class PrintIR(Instrument):
    """Print the IR after passes whose name is in `names` ('all' for every pass)."""

    names: frozenset[str] | str = "all"
    stream: TextIO = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        if isinstance(self.names, str) and self.names != "all":
            self.names = frozenset({self.names})

    def after_pass(self, p: Pass, result: PassResult, seconds: float, depth: int) -> None:
        if self.names == "all" or p.name in self.names:
            self.stream.write(f"// IR after {p.spec()}\n")
            self.stream.write(print_graph(result.graph, elide_weights=True))


@dataclass
class DumpIR(Instrument):
    """Write the input IR as 000-input.txt, then NNN-<pass>.txt after each pass."""

    folder: Path
    count: int = 0

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def before_pass(self, p: Pass, graph: Graph, depth: int) -> None:
        if self.count == 0:
            self._write("input", graph)

    def after_pass(self, p: Pass, result: PassResult, seconds: float, depth: int) -> None:
        self._write(p.name, result.graph)

    def _write(self, label: str, graph: Graph) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        (self.folder / f"{self.count:03d}-{safe}.txt").write_text(print_graph(graph, elide_weights=True))
        self.count += 1


class Verify(Instrument):
    """Run the verifier after every pass."""

    def after_pass(self, p: Pass, result: PassResult, seconds: float, depth: int) -> None:
        try:
            verify(result.graph)
        except VerificationError as e:
            raise VerificationError([f"after pass '{p.spec()}': {m}" for m in e.problems]) from None
