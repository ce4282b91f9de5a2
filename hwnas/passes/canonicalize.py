"""The canonicalization pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.ir.alloc import paused_gc
from hwnas.ir.graph import Graph
from hwnas.passes.base import CompositePass, Pass, PassResult, register_pass
from hwnas.passes.dce import DeadCodeElimination
from hwnas.passes.eliminate_noops import EliminateNoops
from hwnas.passes.fold_batchnorm import FoldBatchNorm
from hwnas.passes.fold_constants import FoldConstants
from hwnas.passes.fold_pad import FoldPad
from hwnas.passes.fold_qdq import FoldQdq
from hwnas.passes.fuse_activations import FuseActivations
from hwnas.passes.pipeline import Fixpoint, PassRunner
from hwnas.passes.refresh_shapes import RefreshShapes


@register_pass
@dataclass(frozen=True)
class Canonicalize(CompositePass):
    """Runs fold-qdq, eliminate-noops, fold-constants, fold-pad, fold-batchnorm, dce,
    refresh-shapes and fuse-activations to a fixpoint: the form every cost model and later
    pass expects (a QDQ model's Q/DQ become quantization annotations first, so it is priced
    as the integer model it is)."""

    name = "canonicalize"
    tolerance = FoldBatchNorm.tolerance
    max_iterations: int = 20

    def children(self) -> tuple[Pass, ...]:
        return (FoldQdq(), EliminateNoops(), FoldConstants(), FoldPad(), FoldBatchNorm(), DeadCodeElimination(),
                RefreshShapes(), FuseActivations())

    def run_nested(self, graph: Graph, runner: PassRunner) -> PassResult:
        with paused_gc():
            return Fixpoint(self.children(), self.max_iterations).run_nested(graph, runner)
