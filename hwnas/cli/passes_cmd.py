"""`hwnas passes`: list the registered passes with their options and what they do."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwnas.cli.common import out


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `passes` and its flags to the subcommands."""
    s = sub.add_parser("passes", help="list the registered passes", description=(
        "List the passes a pipeline can name, each with its options (name: type = default) and the "
        "first paragraph of its description."))
    s.add_argument("--plugin", action="append", default=[], type=Path, metavar="FILE.py")
    s.add_argument("name", nargs="?", help="show only this pass")
    return s


def run(args: argparse.Namespace) -> int:
    """Print each pass: its name and options on one line, its first paragraph below."""
    from hwnas.errors import PipelineError
    from hwnas.passes import load_plugin, registered_passes
    from hwnas.passes.base import describe_pass

    for plugin in args.plugin:
        load_plugin(plugin)
    passes = registered_passes()
    if args.name is not None and args.name not in passes:
        raise PipelineError(f"unknown pass '{args.name}' (known passes: {', '.join(sorted(passes))})")
    names = [args.name] if args.name else sorted(passes)
    width = min(out.width, 100)
    for i, name in enumerate(names):
        if i:
            out.print("")
        out.print(describe_pass(passes[name], width), markup=False, highlight=False, soft_wrap=True)
    return 0
