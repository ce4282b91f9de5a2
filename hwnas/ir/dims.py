"""Sizes for symbolic input dimensions, as a person writes them: `N=1,H=240,W=320`.

Kept free of numerical imports: the command line parses `--dims` with it before loading anything.
"""

from __future__ import annotations

import re

_ITEM = re.compile(r"([^=:,;\s]+)\s*[=:]\s*(-?\d+)")


def parse_dims(text: str) -> dict[str, int]:
    """`NAME=SIZE` pairs (or `NAME:SIZE`), separated by commas, semicolons or spaces, as a dict;
    every size at least 1, no name twice. A wrong item raises ValueError naming it."""
    sizes: dict[str, int] = {}
    for item in re.split(r"\s*[,;]\s*|\s+(?=[^=:\s]+\s*[=:])", text.strip()):
        if not item:
            continue
        m = _ITEM.fullmatch(item)
        if m is None:
            raise ValueError(f"'{item}' is not NAME=SIZE (give e.g. N=1,H=240,W=320)")
        name, size = m.group(1), int(m.group(2))
        if size < 1:
            raise ValueError(f"{name}={size}: a size must be at least 1")
        if sizes.get(name, size) != size:
            raise ValueError(f"{name} is given twice ({sizes[name]} and {size})")
        sizes[name] = size
    return sizes

