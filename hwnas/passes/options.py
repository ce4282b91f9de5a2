"""How pass options print in a pipeline spec (`prune-channels{ratio=0.5,policy=given}`):
the inverse of the parser in `hwnas.passes.pipeline`, at the bottom of the pass layer so
that every pass can print its own spec."""

from __future__ import annotations

import re
from collections.abc import Mapping


def format_options(opts: Mapping[str, object]) -> str:
    """`{k=v,...}` as a pipeline spec writes options ('' for none); strings that are not
    plain words are quoted, booleans are true/false."""
    if not opts:
        return ""
    return "{" + ",".join(f"{k}={_format_value(v)}" for k, v in opts.items()) + "}"


def _format_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if re.fullmatch(r"[A-Za-z0-9_.\-+]+", v) else f'"{v}"'
    return repr(v)
