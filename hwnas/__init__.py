"""hwnas: hardware-aware model compilation and architecture search.

`hwnas.compile(graph, target)` is the main job as a library call (see `hwnas.compile`);
the layers below it are `ir`, `frontends`, `backends` and `passes` (README, "Architecture").
"""

from hwnas.compile import Compiled, compile

__all__ = ["Compiled", "compile"]
