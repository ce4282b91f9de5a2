"""`hwnas inspect MODEL`: per-layer table of op, shapes, params and MACs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from hwnas.cli.common import load, out


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("inspect", help="per-layer table: op, shapes, params, MACs", description=(
        "Print a per-layer table of MODEL (an ONNX file or an hwnas .json/.hwnas dump): op, "
        "output shape, parameters and MACs, with totals; ops without a cost entry are listed as unpriced."))
    s.add_argument("model", type=Path)
    return s


def run(args: argparse.Namespace) -> int:
    from hwnas.ir.registry import op_counts

    graph = load(args.model)
    table = Table(title=f"{graph.name} ({args.model.name})", show_lines=False)
    for col, just in (("#", "right"), ("node", "left"), ("op", "left"), ("output", "left"),
                      ("params", "right"), ("MACs", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    totals = [0, 0, 0]
    unpriced: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        c = op_counts(n)
        shape = ", ".join(str(v.type) if v.type else "?" for v in n.outputs)
        if c is None:
            unpriced[n.qualified_op] = unpriced.get(n.qualified_op, 0) + 1
            table.add_row(str(i), n.name, n.qualified_op, shape, "unpriced", "unpriced")
            continue
        totals[0] += c.params
        totals[1] += c.macs
        totals[2] += c.flops
        table.add_row(str(i), n.name, n.qualified_op, shape, f"{c.params:,}", f"{c.macs:,}")
    table.add_section()
    table.add_row("", "total", f"{len(graph.nodes)} nodes", "", f"{totals[0]:,}", f"{totals[1]:,}")
    out.print(table)
    out.print(f"params {totals[0]:,}  MACs {totals[1]:,}  FLOPs {totals[2]:,}")
    if unpriced:
        out.print("unpriced ops: " + ", ".join(f"{k} ×{v}" for k, v in sorted(unpriced.items())))
    return 0
