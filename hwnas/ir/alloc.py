"""Pausing Python's cyclic garbage collector while a graph is built or rewritten."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Run the block with the cyclic collector off, as it was before afterwards. Building or
    rewriting a graph allocates many small objects that live as long as it does: meanwhile
    the collector's young passes rescan them over and over and free little (a fifth of
    canonicalize on a 10,000-node CNN). Once it is back on, its next pass looks at all the
    block allocated once, and frees what the block left unreachable."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
