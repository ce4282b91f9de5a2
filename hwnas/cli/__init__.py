"""The `hwnas` command. One module per subcommand in this package; each has
`register(subparsers)` and `run(args)`.

Every error a user can cause prints one line (`hwnas: error: ...`) and exits with 2;
no output file is left half-written.
"""

from __future__ import annotations

import argparse
import importlib
import warnings
from collections.abc import Sequence

from hwnas.cli.common import console
from hwnas.errors import HwnasError

# Subcommands in the order `hwnas --help` lists them.
COMMANDS = ("inspect", "opt", "dump", "cost", "compile", "compress", "measure", "calibrate", "passes")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except HwnasError as e:
        console.print(f"hwnas: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("hwnas: interrupted", markup=False)
        return 130


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """hwnas's own warnings (random calibration data, ...) as one plain line on stderr."""
    console.print(f"hwnas: warning: {message}", markup=False, highlight=False, soft_wrap=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware model compiler and architecture search.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"hwnas.cli.{name}_cmd")
        s = module.register(sub)
        s.set_defaults(func=module.run)
    return p
