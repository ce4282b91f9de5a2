"""`hwnas inspect MODEL`: per-layer table of op, shapes, params and MACs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from hwnas.cli.common import add_dims, bind_named, load, out


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("inspect", help="per-layer table: op, shapes, params, MACs", description=(
        "Print a per-layer table of MODEL (an ONNX file or an hwnas .json/.hwnas dump): op, "
        "output shape, parameters and MACs, with totals; ops without a cost entry are listed as unpriced. "
        "Each weight is counted once, at the node that reads it at run time; with a symbolic batch, "
        "MACs are per sample."))
    s.add_argument("model", type=Path)
    add_dims(s, "counted at those sizes")
    return s


def run(args: argparse.Namespace) -> int:
    from hwnas.backends.cost.report import format_bytes
    from hwnas.ir.registry import graph_weights, is_priced, op_counts, static_values
    from hwnas.passes.bind_dims import bind, symbolic_inputs

    graph = bind_named(load(args.model, args.dims), args.dims)
    shapes = [", ".join(str(v.type) if v.type else "?" for v in n.outputs) for n in graph.nodes]
    symbolic = symbolic_inputs(graph)
    # Only a leading (batch) dim counted as 1 makes the figures per sample.
    batch_only = all(v.type.shape is None or all(isinstance(d, int) for d in v.type.shape[1:])
                     for v in graph.inputs if v.type is not None)
    if symbolic:
        # The graph is bound in place: it is not written anywhere, and a copy would duplicate every weight.
        bind(graph, {}, value=1)
    static = static_values(graph)
    weights = graph_weights(graph, static)
    table = Table(title=f"{graph.name} ({args.model.name})", show_lines=False)
    for col, just in (("#", "right"), ("node", "left"), ("op", "left"), ("output", "left"),
                      ("params", "right"), ("MACs", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    macs = flops = 0
    unpriced: dict[str, int] = {}
    unsized: dict[str, int] = {}  # priced ops whose sizes are not known as numbers
    for i, (n, shape) in enumerate(zip(graph.nodes, shapes, strict=True)):
        c = op_counts(n, static, weights)
        params = sum(v.type.numel() or 0 for v in weights.of(n) if v.type is not None)
        if c is None:
            missing = unsized if is_priced(n) else unpriced
            missing[n.qualified_op] = missing.get(n.qualified_op, 0) + 1
            table.add_row(str(i), n.name, n.qualified_op, shape, f"{params:,}",
                          "size unknown" if missing is unsized else "unpriced")
            continue
        macs += c.macs
        flops += c.flops
        table.add_row(str(i), n.name, n.qualified_op, shape, f"{params:,}", f"{c.macs:,}")
    table.add_section()
    table.add_row("", "total", f"{len(graph.nodes)} nodes", "", f"{weights.params:,}", f"{macs:,}")
    out.print(table)
    per = (" per sample" if batch_only else " (symbolic dims as 1)") if symbolic else ""
    out.print(f"params {weights.params:,} ({format_bytes(weights.nbytes)})  MACs{per} {macs:,}  FLOPs{per} {flops:,}",
              markup=False, highlight=False)
    if symbolic:
        out.print(f"{'per sample: ' if batch_only else ''}symbolic dims of {', '.join(symbolic)} counted as 1"
                  f"{'' if batch_only else ' (give their sizes with --dims NAME=SIZE,...)'}", markup=False,
                  highlight=False)
    if unpriced:
        out.print("unpriced ops: " + ", ".join(f"{k} ×{v}" for k, v in sorted(unpriced.items())))
    if unsized:
        counts = ", ".join(f"{k} ×{v}" for k, v in sorted(unsized.items()))
        out.print("not counted, sizes unknown (dims onnx's shape inference could not compute; `hwnas cost` folds "
                  f"constants first, which may size them): {counts}", markup=False, highlight=False)
    if unpriced or unsized:
        out.print("the totals leave these nodes out: they are lower bounds", markup=False, highlight=False)
    return 0
