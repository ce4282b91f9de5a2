"""What the bundled tasks do with torch: lower a module to the IR with a symbolic batch
and keep trained weights in a cache. Imported only by loaders
(torch is slow to import; the task registry is not)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.files import write_atomic
from hwnas.frontends.onnx import MIN_OPSET, import_onnx
from hwnas.ir.graph import Graph
from hwnas.passes.dce import DeadCodeElimination
from hwnas.passes.eliminate_noops import EliminateNoops
from hwnas.passes.fold_constants import FoldConstants
from hwnas.passes.pipeline import Pipeline
from hwnas.passes.refresh_shapes import RefreshShapes
from hwnas.tasks.base import BATCH_DIM, INPUT, OUTPUT, Metric, Split, Task


def task_from_module(name: str, module: nn.Module, train: Split, test: Split, metric: Metric,
                     num_classes: int) -> Task:
    """A task whose graph is `module` lowered to the IR (see `lower`)."""
    return Task(name, lower(module, train[0][:1], name), train, test, metric, num_classes, module)


def lower(module: nn.Module, example: np.ndarray, name: str) -> Graph:
    """The module in the IR, batch dimension the symbol BATCH_DIM, BatchNorm kept as nodes.

    import_torch exports in EVAL mode, where torch folds each BatchNorm into its conv; PRESERVE
    (the module is in eval mode, so inference all the same) keeps them for the passes that handle
    BatchNorm (pruning removes its channels; fold-batchnorm folds it). The exact cleanups then
    drop the exporter's Identity nodes and fold its constant subgraphs (the pads of
    EfficientNet's same-padding convs)."""
    module.eval()
    buf = io.BytesIO()
    axes = {INPUT: {0: BATCH_DIM}, OUTPUT: {0: BATCH_DIM}}
    with one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant folding outside EVAL mode: moot for a module in eval mode
        # torch's stubs name only paths, but the exporter writes to any binary file object.
        torch.onnx.export(module, (torch.from_numpy(example),), buf,  # type: ignore[arg-type]
                          dynamo=False, opset_version=MIN_OPSET,
                          input_names=[INPUT], output_names=[OUTPUT], dynamic_axes=axes, do_constant_folding=True,
                          training=torch.onnx.TrainingMode.PRESERVE)
    graph = import_onnx(onnx.load_from_string(buf.getvalue()))
    graph = Pipeline((EliminateNoops(), FoldConstants(), DeadCodeElimination(), RefreshShapes())).run(graph).graph
    graph.name = name
    return graph


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block.

    Small networks gain nothing from intra-op threads and lose much on a busy machine; one
    thread also makes training reproducible bit for bit whatever the core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def load_cached(module: nn.Module, path: Path) -> bool:
    """Loads weights from `path` (tensors only: weights_only) into `module`; False when there
    is no usable file, which then costs a retraining, not an error."""
    if not path.is_file():
        return False
    try:
        module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    except Exception as e:  # a truncated or stale file: train again and overwrite it
        warnings.warn(f"{path}: cached weights unusable ({type(e).__name__}); retraining", stacklevel=3)
        return False
    return True


def store_cached(module: nn.Module, path: Path) -> None:
    """Writes the module's weights to `path` atomically; a cache that cannot be written only
    costs time, so that is a warning."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())
    except (OSError, HwnasError) as e:
        warnings.warn(f"{path}: cannot cache trained weights ({e})", stacklevel=3)
