"""A task built at run time from the user's model and data file (`hwnas compress MODEL --data FILE.npz`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from hwnas.errors import DataError
from hwnas.files import read_npz
from hwnas.ir.graph import Graph
from hwnas.tasks.base import Metric, Task, stratified
from hwnas.tasks.evaluate import run_model


def task_from_data(graph: Graph, path: str | Path, *, test_fraction: float = 0.3, seed: int = 0) -> Task:
    """A classification task from a model and an .npz of labelled samples: arrays `x`
    (inputs, shaped as the graph's single input but for the batch) and `y` (int labels),
    optionally `x_test` and `y_test`; without them `test_fraction` of the samples, stratified,
    is held out for the report. The .npz is read without pickles."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise DataError(f"{graph.name}: compressing needs one input and one output (logits)")
    if not Path(path).exists():
        raise DataError(f"{path}: no such data file")
    data = read_npz(path, DataError, str(path))
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise DataError(f"{path}: missing array '{missing[0]}' (has: {', '.join(sorted(data)) or 'none'})")
    v = graph.inputs[0]
    shape = v.type.shape if v.type is not None else None
    want = shape[1:] if shape is not None else None
    out = graph.outputs[0].type
    classes = out.shape[-1] if out is not None and out.shape and isinstance(out.shape[-1], int) else None
    splits = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in data else [])
    for xk, yk in splits:
        x, y = data[xk], data.get(yk)
        if y is None:
            raise DataError(f"{path}: has '{xk}' but no '{yk}'")
        if want is not None and (x.ndim != len(want) + 1 or any(
                isinstance(d, int) and d != s for d, s in zip(want, x.shape[1:], strict=True))):
            raise DataError(f"{path}: '{xk}' has shape {list(x.shape)}, the model's input '{v.name}' is "
                            f"{list(shape or ())}")
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise DataError(f"{path}: '{yk}' must be one integer label per row of '{xk}'")
        if classes is not None and (y.min() < 0 or y.max() >= classes):
            raise DataError(f"{path}: '{yk}' has labels outside 0..{classes - 1}")
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    if "x_test" in data:
        train, test = (x, y), (data["x_test"].astype(np.float32), data["y_test"].astype(np.int64))
    else:
        train, test = stratified(x, y, test_fraction, seed)
    return Task(graph.name or Path(path).stem, graph, train, test, Metric.ACCURACY, classes or 0, None, v.name,
                reference=partial(run_model, graph))
