"""Per-layer quantization sensitivity, for the mixed-precision allocation: HAWQ's
second-order term Ω_l(b) = Tr(H_l)/n_l · ‖Q_b(W_l) − W_l‖² with the Hessian trace of the
loss by Hutchinson's estimator (E[vᵀHv] over Rademacher v; Hessian-vector products by
double backprop through the torch emission), or the measured squared change of the outputs
when that layer alone is quantized."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.backends.emit.qdq import weight_axis, weight_qmax, weight_scales
from hwnas.errors import UnsupportedModelError
from hwnas.ir.graph import Graph, Node


def _weights(module, nodes: Sequence[Node]) -> list[torch.nn.Parameter]:  # noqa: ANN001
    return [module.params[module._keys[n.operand(1).name]] for n in nodes]


def _quantized(w: torch.Tensor, node: Node, bits: int, w_method: str = "minmax") -> torch.Tensor:
    axis = weight_axis(node, w.dim())
    s = weight_scales(w.detach(), bits, w_method, axis)
    m = weight_qmax(bits)
    shape = [1] * w.dim()
    shape[axis] = -1
    s = s.reshape(shape)
    return torch.clamp(torch.round(w.detach() / s), -m, m) * s


def hessian_traces(graph: Graph, nodes: Sequence[Node], x: np.ndarray, labels: np.ndarray | None = None,
                   iterations: int = 16, seed: int = 0) -> dict[str, float]:
    """Tr(H_l) of the cross-entropy loss per layer, by Hutchinson's estimator over
    `iterations` Rademacher vectors. LABELS are the samples' true classes; without them the
    model's own top-1 stands in, with a warning (the loss is then near its minimum, and the
    traces say less)."""
    from hwnas.backends.emit.torch import to_torch

    float_graph = copy.deepcopy(graph)
    for n in float_graph.nodes:
        n.ann.quant = None
    module = to_torch(float_graph)
    names = [n.name for n in nodes]
    params = _weights(module, [float_graph.node_by_name(n) for n in names])
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    logits = module(xt)
    if isinstance(logits, tuple):
        raise UnsupportedModelError(f"graph '{graph.name}' has {len(logits)} outputs: sensitivity=hessian "
                                    "differentiates the cross-entropy of one output of class scores "
                                    "(sensitivity=perturbation measures the change of every output)")
    if labels is None:
        warnings.warn("quantize-mixed: Hessian sensitivities use the model's own predictions as labels (the "
                      "calibration data has no 'labels' array)", stacklevel=3)
        y = logits.detach().argmax(1)
    else:
        if len(labels) != len(x):
            raise ValueError(f"{len(labels)} labels for {len(x)} samples")
        y = torch.from_numpy(labels.astype(np.int64))
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    traces = np.zeros(len(params))
    for _ in range(iterations):
        vs = [torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1 for p in params]
        hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        traces += np.array([float((h * v).sum()) for h, v in zip(hv, vs, strict=True)])
    return dict(zip(names, traces / iterations, strict=True))


def sensitivities(graph: Graph, nodes: Sequence[Node], bits: Sequence[int], x: np.ndarray,
                  kind: str = "hessian", labels: np.ndarray | None = None, seed: int = 0,
                  w_method: str = "minmax") -> dict[str, dict[int, float]]:
    """Ω_l(b) for every layer and width (`kind` hessian or perturbation), the weights
    quantized with the scales `w_method` (minmax or mse) picks, as they will be. A negative
    trace estimate counts by its magnitude, with a warning (never as "insensitive")."""
    from hwnas.backends.emit.torch import to_torch

    out: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        float_graph = copy.deepcopy(graph)
        for n in float_graph.nodes:
            n.ann.quant = None
        try:
            module = to_torch(float_graph)
        except UnsupportedModelError as e:
            if kind == "hessian":
                raise UnsupportedModelError(f"{e}; sensitivity=hessian differentiates the PyTorch emission "
                                            f"(sensitivity=perturbation runs in onnxruntime)") from None
            warnings.warn(f"quantize-mixed: {e}; perturbation sensitivities measured in onnxruntime instead "
                          f"(a session per layer and width)", stacklevel=3)
            return _perturbation_onnxruntime(float_graph, nodes, bits, x, w_method)
        params = dict(zip([n.name for n in nodes], _weights(module, [float_graph.node_by_name(n.name)
                                                                     for n in nodes]), strict=True))
    if kind == "hessian":
        traces = hessian_traces(graph, nodes, x, labels, seed=seed)
        for n in nodes:
            w = params[n.name].detach()
            if traces[n.name] < 0:  # not convex there, or a noisy estimate: its size still measures curvature
                warnings.warn(f"quantize-mixed: layer '{n.name}' has a negative Hessian trace estimate "
                              f"({traces[n.name]:.3g}); its sensitivity uses the magnitude", stacklevel=2)
            avg = abs(traces[n.name]) / w.numel()
            out[n.name] = {b: avg * float(((_quantized(w, n, b, w_method) - w) ** 2).sum()) for b in bits}
        return out
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        ref = _outputs(module(xt))
        for n in nodes:
            p = params[n.name]
            original = p.detach().clone()
            out[n.name] = {}
            for b in bits:
                p.copy_(_quantized(original, n, b, w_method))
                out[n.name][b] = _change(_outputs(module(xt)), ref, len(xt))
            p.copy_(original)
    return out


def _outputs(result: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The emitted module's outputs as a tuple (a graph with several outputs, a detector's boxes
    and scores, returns one)."""
    return result if isinstance(result, tuple) else (result,)


def _change(outputs: Sequence[torch.Tensor | np.ndarray], refs: Sequence[torch.Tensor | np.ndarray],
            samples: int) -> float:
    """The squared change of the outputs from the references, summed over every output's
    elements, per sample."""
    return sum(float(((y - r) ** 2).sum()) for y, r in zip(outputs, refs, strict=True)) / samples


def _perturbation_onnxruntime(float_graph: Graph, nodes: Sequence[Node], bits: Sequence[int], x: np.ndarray,
                              w_method: str) -> dict[str, dict[int, float]]:
    """The perturbation sensitivities of `sensitivities`, measured in onnxruntime for a graph the
    torch emission cannot take: the float model, then one session per layer and width with that
    layer's weight replaced by its quantized values (the same `_quantized` values)."""
    from onnx import numpy_helper

    from hwnas.backends.emit.onnx import to_onnx
    from hwnas.backends.sessions import session

    model = to_onnx(float_graph)
    where = {t.name: i for i, t in enumerate(model.graph.initializer)}
    feeds = {float_graph.inputs[0].name: np.ascontiguousarray(x, np.float32)}

    def run() -> list[np.ndarray]:
        ys = session(model.SerializeToString(), source=f"quantize-mixed: graph '{float_graph.name}'").run(None, feeds)
        return [np.asarray(y, np.float64) for y in ys]

    ref = run()
    out: dict[str, dict[int, float]] = {}
    for n in nodes:
        weight = float_graph.node_by_name(n.name).input(1)
        name = weight.name if weight is not None else ""
        if name not in where:
            raise UnsupportedModelError(f"quantize-mixed: layer '{n.name}': its weight '{name}' is not an "
                                        f"initializer of the emitted model")
        original = copy.deepcopy(model.graph.initializer[where[name]])
        array = numpy_helper.to_array(original)
        w = torch.from_numpy(array.astype(np.float32))
        out[n.name] = {}
        for b in bits:
            q = _quantized(w, n, b, w_method).numpy().astype(array.dtype)
            model.graph.initializer[where[name]].CopyFrom(numpy_helper.from_array(q, name))
            out[n.name][b] = _change(run(), ref, len(x))
        model.graph.initializer[where[name]].CopyFrom(original)
    return out
