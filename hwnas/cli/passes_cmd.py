"""`hwnas passes`: list the registered passes."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwnas.cli.common import out


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("passes", help="list the registered passes", description="List the passes a pipeline can name.")
    s.add_argument("--plugin", action="append", default=[], type=Path, metavar="FILE.py")
    return s


def run(args: argparse.Namespace) -> int:
    from hwnas.passes import load_plugin, registered_passes

    for plugin in args.plugin:
        load_plugin(plugin)
    for name, cls in sorted(registered_passes().items()):
        doc = (cls.__doc__ or "").strip().split(".")[0].replace("\n", " ")
        out.print(f"{name:<20} {doc}", markup=False, highlight=False)
    return 0
