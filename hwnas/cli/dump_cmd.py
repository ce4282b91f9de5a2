"""`hwnas dump MODEL`: the IR as text, JSON or Graphviz DOT."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwnas.cli.common import check_writable, load, say
from hwnas.errors import OutputError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("dump", help="print the IR as text, JSON or Graphviz DOT", description=(
        "Print MODEL's IR. text: the IR's own text form (weights elided unless --weights); "
        "json: JSON plus an .npz of weights (needs -o); dot: a Graphviz graph."))
    s.add_argument("model", type=Path)
    s.add_argument("--format", choices=("text", "json", "dot"), default="text")
    s.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    s.add_argument("--weights", action="store_true", help="text: include every weight (parses back)")
    return s


def run(args: argparse.Namespace) -> int:
    from hwnas.backends.emit.onnx import write_atomic

    if args.output is not None:
        check_writable(args.output)
    graph = load(args.model)
    if args.format == "json":
        from hwnas.ir.serialize import save_json

        if args.output is None:
            raise OutputError("--format json writes GRAPH.json and GRAPH.npz: give -o GRAPH.json")
        j, w = save_json(graph, args.output)
        say(f"wrote {j} and {w}")
        return 0
    if args.format == "dot":
        from hwnas.ir.dot import to_dot

        text = to_dot(graph)
    else:
        from hwnas.ir.text import print_graph

        text = print_graph(graph, elide_weights=not args.weights)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
    return 0
