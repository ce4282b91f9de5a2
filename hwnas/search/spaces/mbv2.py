"""The layer-wise MobileNetV2-like macro space as a `Space`: width multiplier, input
resolution, and per stage a depth (base - 1 to base + 1 blocks), a kernel size and an expansion
ratio (the first stage keeps expansion 1, as MobileNetV2 does)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnas.ir.graph import Graph
from hwnas.search.spaces import Dim, Space
from hwnas.search.spaces.mobilenetv2 import BASE_STAGES, EXPANSIONS, KERNELS, RESOLUTIONS, WIDTHS, MBConfig, build_ir

DEPTHS = tuple(tuple(range(max(1, n - 1), n + 2)) for _, _, n, _ in BASE_STAGES)
"""Each stage's depth choices."""


class MobileNetV2Space(Space[MBConfig]):
    """MobileNetV2-like networks for `num_classes` classes (ImageNet's 1,000 by default)."""

    name = "mbv2"
    dims = (Dim("width", WIDTHS), Dim("resolution", RESOLUTIONS),
            *(Dim(f"depth{s}", d) for s, d in enumerate(DEPTHS)),
            *(Dim(f"kernel{s}", KERNELS) for s in range(len(BASE_STAGES))),
            *(Dim(f"expansion{s}", EXPANSIONS) for s in range(1, len(BASE_STAGES))))

    def __init__(self, num_classes: int = 1000) -> None:
        self.num_classes = num_classes
        # Weight layers at most: the stem, 3 per block at the deepest, the head conv, the classifier.
        self.max_layers = 1 + 3 * sum(d[-1] for d in DEPTHS) + 2

    def encode(self, candidate: MBConfig) -> np.ndarray:
        """Choice indices: width, resolution, depths, kernels, expansions of stages 1..6."""
        values = (candidate.width, candidate.resolution, *candidate.depths, *candidate.kernels,
                  *candidate.expansions[1:])
        return np.array([d.choices.index(v) for d, v in zip(self.dims, values, strict=True)], dtype=float)

    def decode(self, vector: Sequence[float] | np.ndarray) -> MBConfig:
        """The config the (rounded) indices name."""
        i, n = self.indices(vector), len(BASE_STAGES)
        return MBConfig(WIDTHS[i[0]], tuple(d[k] for d, k in zip(DEPTHS, i[2:2 + n], strict=True)),
                        tuple(KERNELS[k] for k in i[2 + n:2 + 2 * n]), (1, *(EXPANSIONS[k] for k in i[2 + 2 * n:])),
                        RESOLUTIONS[i[1]], self.num_classes)

    def build_ir(self, candidate: MBConfig, seed: int = 0) -> Graph:
        """The network (`mobilenetv2.build_ir`)."""
        return build_ir(candidate, seed)
