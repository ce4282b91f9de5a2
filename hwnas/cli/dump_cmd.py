"""`hwnas dump MODEL`: the IR as text, JSON, Graphviz DOT, or (with a target) a cost report page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwnas.cli.common import add_dims, bind_named, check_writable, load, say, status
from hwnas.errors import OutputError, TargetError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("dump", help="print the IR as text, JSON, Graphviz DOT or an HTML cost page", description=(
        "Print MODEL's IR. text: the IR's own text form (weights elided unless --weights); "
        "json: JSON plus an .npz of weights (needs -o); dot: a Graphviz graph; "
        "html: one self-contained page with the graph coloured by cost (needs --target). "
        "With --target T every node is annotated with its cost on T: a 'cost' object per node in JSON, "
        "fill colours and tooltips in DOT, comment lines in text (which still parses back)."))
    s.add_argument("model", type=Path)
    s.add_argument("--format", choices=("text", "json", "dot", "html"), default="text")
    s.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    s.add_argument("--weights", action="store_true", help="text: include every weight (parses back)")
    s.add_argument("-t", "--target", metavar="T", help="annotate every node with its cost on this target")
    s.add_argument("-p", "--passes", default="", metavar="SPEC",
                   help="pipeline to run before dumping (default: none; 'canonicalize' fuses as targets run)")
    add_dims(s, "set before the pipeline runs, and in the dump")
    return s


def run(args: argparse.Namespace) -> int:
    from hwnas.files import write_atomic

    if args.output is not None:
        check_writable(args.output)
    if args.format == "json" and args.output is None:
        raise OutputError("--format json writes GRAPH.json and GRAPH.npz: give -o GRAPH.json")
    if args.format == "html" and args.target is None:
        raise TargetError("--format html shows costs: give --target T (e.g. --target host-cpu)")
    target = None
    if args.target is not None:
        from hwnas.backends.target import load_target

        target = load_target(args.target)
    graph = bind_named(load(args.model, args.dims), args.dims)
    if args.passes:
        from hwnas.compile import run_pipeline

        with status(f"running {args.passes[:60]}"):
            graph = run_pipeline(graph, args.passes).graph
    report = None
    if target is not None:
        from hwnas.compile import price

        with status(f"pricing on {target.name}"):
            priced = price(graph, target)
        for note in priced.notes:
            say(f"hwnas: {note}")
        report = priced.report
    if args.format == "json":
        if report is None:
            from hwnas.ir.serialize import save_json

            j, w = save_json(graph, args.output)
        else:
            from hwnas.backends.render.json import save_cost_json

            j, w = save_cost_json(graph, report, args.output)
        say(f"wrote {j} and {w}")
        return 0
    if args.format == "html":
        from hwnas.backends.render.html import render_html

        assert report is not None
        text = render_html(graph, report)
    elif args.format == "dot":
        if report is None:
            from hwnas.ir.dot import to_dot

            text = to_dot(graph)
        else:
            from hwnas.backends.render.dot import to_cost_dot

            text = to_cost_dot(graph, report)
    else:
        from hwnas.ir.text import print_graph

        text = print_graph(graph, elide_weights=not args.weights)
        if report is not None:
            from hwnas.backends.render import cost_comments

            text += cost_comments(report)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
    return 0
