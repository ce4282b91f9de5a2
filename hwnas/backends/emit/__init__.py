"""Emitters: functions of a graph that write it in a form a runtime runs, never changing it.

- `onnx.to_onnx`: float ONNX, exactly the graph;
- `qdq.to_qdq_onnx`: QDQ ONNX for graphs that carry quantization annotations (onnxruntime
  runs their 8-bit layers on integer kernels);
- `torch.to_torch`: a trainable PyTorch module (fake quantization with straight-through
  gradients for quantized nodes).

`emit_onnx` picks between the first two; every command that writes ONNX calls it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

    from hwnas.ir.graph import Graph


def is_quantized(graph: Graph) -> bool:
    """True when any node carries a quantization annotation (then the graph is emitted as QDQ)."""
    return any(n.ann.quant is not None for n in graph.nodes)


def emit_onnx(graph: Graph, *, check: bool = True) -> onnx.ModelProto:
    """The ONNX model of `graph`: QDQ when it is quantized, float otherwise; checked by
    onnx's checker unless `check` is off."""
    import onnx

    if is_quantized(graph):
        from hwnas.backends.emit.qdq import to_qdq_onnx

        model = to_qdq_onnx(graph)
    else:
        from hwnas.backends.emit.onnx import to_onnx

        model = to_onnx(graph)
    if check:
        onnx.checker.check_model(model.SerializeToString(), full_check=False)
    return model


def save_model(graph: Graph, path: str | os.PathLike) -> onnx.ModelProto:
    """Write `emit_onnx(graph)` to `path` atomically (a failure leaves no file) and return it."""
    from hwnas.files import write_atomic

    model = emit_onnx(graph, check=False)
    data = model.SerializeToString()  # once: the checker reads the same bytes we write
    import onnx

    onnx.checker.check_model(data, full_check=False)
    write_atomic(Path(path), data)
    return model
