"""The `hwnas` command. One module per subcommand in this package; each has
`register(subparsers)` and `run(args)`.

Every error a user can cause prints one line (`hwnas: error: ...`) and exits with 2;
no output file is left half-written. Anything else is a bug in hwnas: it prints one line
`hwnas: internal error: ...` (the exception and where it was raised) and exits with 1.
Parsing the command line imports no numerical library (onnx, numpy, torch, onnxruntime): the
subcommands import what they need when they run, so `--help` and a wrong flag answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from hwnas.cli.common import console
from hwnas.errors import HwnasError, ModelLoadError, first_line

# Subcommands in the order `hwnas --help` lists them.
COMMANDS = ("inspect", "opt", "dump", "cost", "compile", "compress", "search", "analog", "measure", "calibrate",
            "passes")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        model = getattr(args, "model", None)
        if isinstance(model, Path) and not model.exists():  # said before any command's heavy imports
            raise ModelLoadError(f"{model}: no such file")
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings()
            return int(args.func(args) or 0)
    except HwnasError as e:
        console.print(f"hwnas: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("hwnas: interrupted", markup=False)
        return 130
    except Exception as e:  # a bug in hwnas, not the user's error: one line that says so, and where
        console.print(f"hwnas: internal error: {type(e).__name__}: {first_line(e)} ({_where(e)}); please report it",
                      markup=False, highlight=False, soft_wrap=True)
        return 1


def _where(e: BaseException) -> str:
    """File and line the exception was raised at (the innermost frame)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown place"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def _one_line_warnings() -> Callable[..., None]:
    """A `warnings.showwarning` for one command: hwnas's own warnings (random calibration data,
    ...) as one plain line on stderr, each message once (two steps that fall back on the same
    random data say it once)."""
    said: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        if str(message) not in said:
            said.add(str(message))
            console.print(f"hwnas: warning: {message}", markup=False, highlight=False, soft_wrap=True)

    return show


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware model compiler and architecture search.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"hwnas.cli.{name}_cmd")
        s = module.register(sub)
        s.set_defaults(func=module.run)
    return p
