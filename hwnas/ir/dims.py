"""Sizes for symbolic input dimensions, as a person writes them: by dim name (`N=1,H=240,W=320`)
or as an input's whole shape (`x=1x3x480x640`, as trtexec's `--shapes` takes it).

Kept free of numerical imports: the command line parses `--dims` with it before loading anything.
"""

from __future__ import annotations

import re

Sizes = dict[str, int | tuple[int, ...]]
"""A dim name's size, or an input name's shape."""

_ITEM = re.compile(r"([^=:,;\s]+)\s*[=:]\s*(-?\d+(?:x-?\d+)*)")


def parse_dims(text: str) -> Sizes:
    """`NAME=SIZE` pairs (or `NAME:SIZE`; a size `AxBxC` is an input's shape), separated by
    commas, semicolons or spaces, as a dict; every size at least 1, no name twice. A wrong
    item raises ValueError naming it."""
    sizes: Sizes = {}
    for item in re.split(r"\s*[,;]\s*|\s+(?=[^=:\s]+\s*[=:])", text.strip()):
        if not item:
            continue
        m = _ITEM.fullmatch(item)
        if m is None:
            raise ValueError(f"'{item}' is not NAME=SIZE (give e.g. N=1,H=240,W=320, or an input's shape: "
                             f"x=1x3x240x320)")
        name, numbers = m.group(1), [int(d) for d in m.group(2).split("x")]
        if min(numbers) < 1:
            raise ValueError(f"{name}={m.group(2)}: a size must be at least 1")
        size = numbers[0] if len(numbers) == 1 else tuple(numbers)
        if sizes.get(name, size) != size:
            raise ValueError(f"{name} is given twice ({sizes[name]} and {m.group(2)})")
        sizes[name] = size
    return sizes
