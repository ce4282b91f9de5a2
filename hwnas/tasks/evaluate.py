"""Scoring models on tasks in onnxruntime: the one place a task's model runs outside torch.

A model is an IR graph or an ONNX model (a QDQ model, say). A graph runs as `emit_onnx`
writes it, so a quantized graph is scored as the QDQ model a command would write, never as
its float weights. Sessions come from `hwnas.backends.sessions`, so threads and error
messages mean what they mean everywhere.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from hwnas.backends.emit import emit_onnx
from hwnas.backends.sessions import session
from hwnas.ir.graph import Graph
from hwnas.tasks.base import Task


def run_batches(sess: ort.InferenceSession, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The first output of a session on `x`, one row per sample, `batch` samples a run. A model
    with a static batch dimension runs that many at a time, the last chunk padded and trimmed."""
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    static = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = static or batch
    chunks = []
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        k = len(chunk)
        if static is not None and k < static:  # pad the last chunk up to the model's batch
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], static - k, axis=0)])
        chunks.append(sess.run([out.name], {inp.name: chunk})[0][:k])
    return np.concatenate(chunks).reshape(len(x), -1)


def run_model(model: Graph | onnx.ModelProto, x: np.ndarray, *, batch: int = 64, threads: int = 1) -> np.ndarray:
    """Logits of `model` on inputs `x`, run in onnxruntime on `threads` intra-op threads (a
    graph as `emit_onnx` writes it: QDQ when quantized)."""
    proto = emit_onnx(model, check=False) if isinstance(model, Graph) else model
    sess = session(proto, threads=threads, source=f"model '{proto.graph.name}'")
    return run_batches(sess, x, batch)


def predict(model: Graph | onnx.ModelProto, task: Task, split: str = "test", batch: int = 64,
            threads: int = 1) -> np.ndarray:
    """Logits of `model` on a split of `task`, run in onnxruntime."""
    return run_model(model, task.split(split)[0], batch=batch, threads=threads)


def evaluate(model: Graph | onnx.ModelProto, task: Task, split: str = "test", batch: int = 64) -> float:
    """The task's metric (accuracy, or top-1 agreement with the fp32 model) of `model` on a split."""
    return task.score(predict(model, task, split, batch), split)


def kl_divergence(reference: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(softmax(reference) || softmax(logits)) over rows, in nats, computed in float64."""
    ref = _log_softmax(reference.astype(np.float64))
    got = _log_softmax(logits.astype(np.float64))
    return float((np.exp(ref) * (ref - got)).sum(axis=1).mean())


def output_kl(model: Graph | onnx.ModelProto, task: Task, split: str = "test", batch: int = 64) -> float:
    """Mean KL(fp32 model's softmax || model's softmax) over a split, in nats."""
    return kl_divergence(task.reference_logits(split), predict(model, task, split, batch))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
