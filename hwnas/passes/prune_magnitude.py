"""Unstructured magnitude pruning: the smallest weights become zeros."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hwnas.ir.annotations import SparsitySpec
from hwnas.ir.graph import Graph
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.channels import private_weights, set_const, weight_nodes, weight_of


@register_pass
@dataclass(frozen=True)
class PruneMagnitude(Pass):
    """Sets the weights of smallest magnitude to zero: `sparsity` of each layer's weights
    (`scope=layer`) or of all weights together under one threshold (`scope=global`, so
    layers with many small weights lose more). Conv, Gemm and MatMul weights only; biases
    stay. Annotates each node with its resulting sparsity, which cost models read. Lossy."""

    name = "prune-magnitude"
    tolerance = math.inf
    sparsity: float = 0.5
    scope: Literal["layer", "global"] = "layer"

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), not {self.sparsity}")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"scope must be layer or global, not {self.scope!r}")

    def run(self, graph: Graph) -> PassResult:
        if self.sparsity == 0.0:
            return PassResult(graph, False)
        changed = private_weights(graph)  # weights built at run time (ConstantOfShape) are pruned too
        nodes = weight_nodes(graph)
        if not nodes:
            return PassResult(graph, changed)
        threshold = None
        if self.scope == "global":
            mags = np.concatenate([np.abs(weight_of(n)).ravel() for n in nodes])
            k = int(self.sparsity * mags.size)
            threshold = np.partition(mags, k)[k] if k else -1.0
        for n in nodes:
            w = weight_of(n)
            mag = np.abs(w)
            if threshold is None:
                k = int(self.sparsity * w.size)
                flat = np.zeros(w.size, bool)
                flat[np.argsort(mag, axis=None, kind="stable")[:k]] = True
                mask = flat.reshape(w.shape)
            else:
                mask = mag < threshold
            new = np.where(mask, np.zeros((), w.dtype), w)
            if not np.array_equal(new, w):
                set_const(graph, n, 1, new, "w_pruned")
                changed = True
            old = n.ann.sparsity
            spec = SparsitySpec(weight_sparsity=float(np.count_nonzero(new == 0) / new.size),
                                structured=old.structured if old else False,
                                kept_channels=old.kept_channels if old else None)
            if spec != old:
                n.ann.sparsity, changed = spec, True
        return PassResult(graph, changed)
