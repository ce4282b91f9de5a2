"""Passes over the IR. Importing this package registers the built-in passes."""

from hwnas.passes import (  # noqa: F401
    bind_dims,
    canonicalize,
    dce,
    eliminate_noops,
    fold_batchnorm,
    fold_constants,
    fold_pad,
    fold_qdq,
    fuse_activations,
    map_analog,
    partition_hybrid,
    prune_channels,
    prune_magnitude,
    quantize,
    quantize_mixed,
    refresh_shapes,
)
from hwnas.passes.base import Pass, PassResult, load_plugin, register_pass, registered_passes
from hwnas.passes.pipeline import Fixpoint, PassRunner, Pipeline, parse_pipeline

__all__ = ["Fixpoint", "Pass", "PassResult", "PassRunner", "Pipeline", "load_plugin", "parse_pipeline",
           "register_pass", "registered_passes"]
