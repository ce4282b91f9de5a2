"""`hwnas cost MODEL --target T1,T2`: per-layer latency, energy and bytes on each target, side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from hwnas.cli.common import add_dims, bind_named, check_writable, load, out, say, status
from hwnas.errors import TargetError

if TYPE_CHECKING:
    from hwnas.backends.cost import CostReport, NodeCost
    from hwnas.backends.target import Target
    from hwnas.ir.graph import Graph

NAME_WIDTH = 36


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("cost", help="price every layer on one or more targets", description=(
        "Run a pass pipeline on MODEL (default 'canonicalize', so activations are fused as the targets run them), "
        "then price every node on each target: latency, energy, bytes moved, share of the latency and what bounds "
        "it, with totals side by side. Targets are shipped names (see hwnas/backends/targets) or .toml paths."))
    s.add_argument("model", type=Path)
    s.add_argument("-t", "--target", required=True, metavar="T1,T2,...", help="targets, comma-separated")
    s.add_argument("-p", "--passes", default="canonicalize", metavar="SPEC",
                   help="pipeline to run before pricing ('' for none; default: canonicalize)")
    s.add_argument("--json", action="store_true", help="print the reports as JSON instead of the table")
    s.add_argument("--plot", type=Path, metavar="FILE.png", help="write per-layer latency and energy bars")
    s.add_argument("--all", action="store_true", help="also show nodes that are free or fused on every target")
    s.add_argument("--setting", metavar="NAME", help="price with this few-shot setting of each target's calibration")
    add_dims(s, "set before the pipeline runs")
    return s


def run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        check_writable(args.plot)
    from hwnas.compile import run_pipeline

    targets = load_targets(args.target)
    graph = bind_named(load(args.model, args.dims), args.dims)
    with status(f"running {args.passes[:60]}"):
        graph = run_pipeline(graph, args.passes).graph
    reports = price_all(graph, targets, args.setting)
    if args.plot is not None:
        from hwnas.backends.render.plot import save_plot

        with status(f"plotting {args.plot}"):
            save_plot(list(reports.values()), args.plot, title=f"{graph.name} ({args.model.name})", show_all=args.all)
    if args.json:
        from hwnas.backends.render.json import finite

        doc = {"model": str(args.model), "pipeline": args.passes,
               "targets": {name: finite(r.to_json()) for name, r in reports.items()}}
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return 0
    print_reports(graph, args.model, reports, show_all=args.all)
    return 0


def load_targets(spec: str) -> list[Target]:
    """Every target named in SPEC, loaded before any work so a typo fails at once."""
    from hwnas.backends.target import load_target

    names = [t.strip() for t in spec.split(",") if t.strip()]
    if not names:
        raise TargetError("--target names no target (give e.g. --target host-cpu,h100)")
    targets: list[Target] = []
    for name in names:
        t = load_target(name)
        # The same file named twice (by name and by path) is one target.
        if not any(t.path and o.path and o.path.resolve() == t.path.resolve() for o in targets):
            targets.append(t)
    return targets


def price_all(graph: Graph, targets: list[Target], setting: str | None = None) -> dict[str, CostReport]:
    """A report per target, keyed by the target's name (its path when two share a name);
    notes (symbolic dims bound for pricing) are said once on stderr."""
    from hwnas.compile import price

    reports: dict[str, CostReport] = {}
    said: set[str] = set()
    for t in targets:
        with status(f"pricing on {t.name}"):
            priced = price(graph, t, setting=setting)
        for note in priced.notes:
            if note not in said:
                say(f"hwnas: {note}")
                said.add(note)
        key = t.name if t.name not in reports else str(t.path or t.name)
        reports[key] = priced.report
    return reports


def _short(name: str, limit: int = NAME_WIDTH) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _cells(c: NodeCost | None, share: float) -> list[Text | str]:
    from hwnas.backends.cost.report import Bound, format_bytes, format_joules, format_seconds
    from hwnas.backends.render import HIDDEN_BOUNDS

    if c is None:
        return ["", "", "", "", ""]
    if c.bound in HIDDEN_BOUNDS:
        return [*[Text("—", style="dim")] * 4, Text(c.bound.value, style="dim")]
    if c.bound is Bound.UNPRICED:
        return [Text("unpriced", style="yellow"), Text("unpriced", style="yellow"), "", "",
                Text("unpriced", style="yellow")]
    return [format_seconds(c.latency_s), format_joules(c.energy_j), format_bytes(c.bytes_moved),
            f"{100 * share:.1f}%", c.bound.value]


def layer_table(graph: Graph, title: str, reports: dict[str, CostReport], rows: list[int]) -> Table:
    """The per-layer table of ROWS (node indices) with five columns per target."""
    from hwnas.backends.render import HIDDEN_BOUNDS, latency_shares

    by = {name: {c.node: c for c in r.nodes} for name, r in reports.items()}
    shares = {name: latency_shares(r) for name, r in reports.items()}
    table = Table(title=title, show_lines=False, show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("node", no_wrap=True)
    table.add_column("op", no_wrap=True)
    for name in reports:
        for i, col in enumerate(("latency", "energy", "bytes", "share", "bound")):
            header = f"{name}\n{col}" if i == 0 else f"\n{col}"
            table.add_column(Text(header), justify="left" if col == "bound" else "right", no_wrap=True)
    for i in rows:
        n = graph.nodes[i]
        costs = [by[name].get(n.name) for name in reports]
        quiet = all(c is None or c.bound in HIDDEN_BOUNDS for c in costs)
        fused = f" +{n.ann.fused_activation.op}" if n.ann.fused_activation else ""
        row: list[Text | str] = [str(i), Text(_short(n.name)), Text(n.qualified_op + fused)]
        for name, c in zip(reports, costs, strict=True):
            row += _cells(c, shares[name].get(n.name, 0.0))
        table.add_row(*row, style="dim" if quiet else None)
    return table


def print_reports(graph: Graph, model: Path, reports: dict[str, CostReport], show_all: bool = False) -> None:
    from hwnas.backends.cost.report import format_bytes, format_joules, format_latency
    from hwnas.backends.render import HIDDEN_BOUNDS, data_dependent_text, unpriced_text

    by = [{c.node: c for c in r.nodes} for r in reports.values()]
    rows = [i for i, n in enumerate(graph.nodes)
            if show_all or any(n.name in b and b[n.name].bound not in HIDDEN_BOUNDS for b in by)]
    title = f"{graph.name} ({model.name}): cost per layer"
    # As many targets side by side as the console is wide; the rest in further tables.
    chunks: list[list[str]] = []
    for name in reports:
        wider = [*chunks[-1], name] if chunks else [name]
        table = layer_table(graph, title, {k: reports[k] for k in wider}, rows[:50])
        natural = out.measure(table, options=out.options.update(max_width=100_000)).maximum
        if chunks and natural <= out.width:
            chunks[-1].append(name)
        else:
            chunks.append([name])
    for chunk in chunks:
        out.print(layer_table(graph, title, {k: reports[k] for k in chunk}, rows))
    hidden = len(graph.nodes) - len(rows)
    if hidden:
        out.print(f"{hidden} nodes free or fused on every target are hidden (--all shows them)", style="dim")

    totals = Table(title="totals")
    totals.add_column("")
    for name in reports:
        totals.add_column(Text(name), justify="right")
    rs = list(reports.values())
    totals.add_row("latency", *(format_latency(r) for r in rs))
    totals.add_row("energy", *(format_joules(r.energy_j) for r in rs))
    totals.add_row("peak memory", *(format_bytes(r.peak_memory_bytes) for r in rs))
    totals.add_row("weights", *(format_bytes(r.weight_bytes) for r in rs))
    totals.add_row("fits", *(Text("yes", style="green") if r.fits else Text("does not fit", style="bold red")
                             for r in rs))
    totals.add_row("method", *(f"{r.kind}, {r.method}" + (f", {r.mode}" if r.mode else "") for r in rs))
    totals.add_row("measured on", *(Text(r.machine, style="yellow" if r.machine_warning else "")
                                    if r.machine else Text("—", style="dim") for r in rs))
    out.print(totals)
    for name, r in reports.items():
        if r.machine_warning:
            out.print(f"{name}: warning: {r.machine_warning}", markup=False, highlight=False, style="yellow")
    for name, r in reports.items():
        for reason in r.does_not_fit:
            out.print(f"{name} does not fit: {reason}", markup=False, highlight=False)
    for name, r in reports.items():
        if r.unpriced:
            out.print(f"{name}: unpriced ops (not in the totals, so the latency is a lower bound): {unpriced_text(r)}",
                      markup=False, highlight=False)
        if r.data_dependent:
            out.print(f"{name}: {data_dependent_text(r)}", markup=False, highlight=False)
