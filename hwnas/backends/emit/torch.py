"""IR → PyTorch: a module that runs the graph with its weights as trainable parameters.

`to_torch(graph)` gives a `GraphModule` whose `forward` takes the graph's inputs in order
and returns its outputs. Float weights (static tensors of more than one element) become
`nn.Parameter`s, so the module trains; `weights_to_graph(module, graph)` writes the
trained values back into the IR's constants. Nodes with a QuantSpec annotation run
fake-quantized, as `to_qdq_onnx` emits them (quantization-aware training). Per-op
functions are registered by decorator (`@op("Conv")`), the shape every interpreter and
cost model shares. An op without one is refused at construction, naming the node.

`to_torch(graph, modules={node name: module})` runs those nodes through the modules instead
(aihwkit's analog layers, say): a module is called with the node's run-time inputs only (a
Conv's data, not its weights or bias, which the module holds) and returns its output(s). The
module is a submodule (its state is in the state dict, `.eval()` reaches it) and a weight
read only by such nodes is not also kept as a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import UnsupportedModelError
from hwnas.ir.graph import Graph, Node, Value
from hwnas.ir.registry import const_value, is_static

OpFn = Callable[[Node, list[Any]], Any]
_OPS: dict[str, OpFn] = {}


def op(*names: str) -> Callable[[OpFn], OpFn]:
    """Register the decorated function as the PyTorch emission of these ONNX ops."""

    def deco(fn: OpFn) -> OpFn:
        for n in names:
            _OPS[n] = fn
        return fn

    return deco


class GraphModule(nn.Module):
    """Runs a graph op by op; float weights are trainable `params`, other constants fixed;
    nodes named in `modules` run through those modules (see the module docstring).
    Refuses at construction a graph with an op it cannot run."""

    def __init__(self, graph: Graph, modules: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        modules = dict(modules or {})
        unknown = sorted(set(modules) - {n.name for n in graph.nodes})
        if unknown:
            raise ValueError(f"modules= names no node of graph '{graph.name}': '{unknown[0]}'")
        missing = [n for n in graph.nodes if n.name not in modules and (n.domain or n.op not in _OPS)]
        if missing:
            n = missing[0]
            raise UnsupportedModelError(f"node '{n.name}' ({n.qualified_op}): no PyTorch emission for this op")
        self.graph = graph
        self.hook: Callable[[Node, list[Any]], list[Any]] | None = None
        """Sees (and may replace) each node's arguments before it runs."""
        # ModuleDict keys cannot hold the dots node names may have: modules by position, names beside.
        self.overrides = nn.ModuleDict({f"n{i}": m for i, m in enumerate(modules.values())})
        self._override_keys = {name: f"n{i}" for i, name in enumerate(modules)}
        """Node name -> key in `overrides`."""
        self.params = nn.ParameterDict()
        self._keys: dict[str, str] = {}
        self._consts: dict[str, torch.Tensor] = {}
        for v in graph.constants.values():
            assert v.const is not None
            t = torch.from_numpy(np.array(v.const))
            if v.users and all(u.name in modules for u in v.users):
                continue  # held by the modules that replace its readers
            if t.is_floating_point() and t.numel() > 1:
                key = f"p{len(self._keys)}"
                self._keys[v.name] = key
                self.params[key] = nn.Parameter(t.clone())
            else:
                self._consts[v.name] = t
        # Weights an exporter builds at run time from constants (the light models'
        # ConstantOfShape) are evaluated once and trained like the others.
        self._built: dict[int, str] = {}
        for n in graph.nodes:
            shape = n.input(0)
            if n.op == "ConstantOfShape" and shape is not None and shape.const is not None:
                with torch.no_grad():
                    t = _OPS[n.op](n, [torch.from_numpy(np.array(shape.const))])
                if t.is_floating_point() and t.numel() > 1:
                    key = f"p{len(self._keys)}"
                    self._keys[n.outputs[0].name] = key
                    self._built[id(n)] = key
                    self.params[key] = nn.Parameter(t.clone())

    def value(self, v: Value, env: dict[int, Any]) -> Any:
        """The tensor of `v`: computed (in `env`), a parameter, or a constant."""
        if id(v) in env:
            return env[id(v)]
        if v.name in self._keys:
            return self.params[self._keys[v.name]]
        if v.name in self._consts:
            return self._consts[v.name]
        c = const_value(v)
        if c is not None:
            return torch.from_numpy(np.array(c))
        raise KeyError(v.name)

    def forward(self, *inputs: torch.Tensor) -> Any:
        """The graph's outputs for its inputs in order: one tensor, or a tuple of several."""
        env: dict[int, Any] = {id(v): x for v, x in zip(self.graph.inputs, inputs, strict=True)}
        grids = _output_grids(self.graph)
        for n in self.graph.nodes:
            if id(n) in self._built:
                env[id(n.outputs[0])] = self.params[self._built[id(n)]]
                continue
            key = self._override_keys.get(n.name)
            if key is not None:
                out = self.overrides[key](*(self.value(v, env) for v in n.inputs if v is not None and not is_static(v)))
                outs = out if isinstance(out, tuple | list) else (out,)
                env.update((id(v), t) for v, t in zip(n.outputs, outs, strict=False))
                continue
            args = [None if v is None else self.value(v, env) for v in n.inputs]
            if n.ann.quant is not None:
                args = _fake_quant(n, args)
            if self.hook is not None:
                args = self.hook(n, args)
            out = _OPS[n.op](n, args)
            outs = out if isinstance(out, tuple | list) else (out,)
            for v, t in zip(n.outputs, outs, strict=False):
                grid = grids.get(id(v))
                env[id(v)] = t if grid is None else torch.fake_quantize_per_tensor_affine(t, *grid, 0, 255)
        results = [env[id(v)] if id(v) in env else self.value(v, env) for v in self.graph.outputs]
        return results[0] if len(results) == 1 else tuple(results)


def _output_grids(graph: Graph) -> dict[int, tuple[float, int]]:
    """Tensors `to_qdq_onnx` puts on a quantized node's 8-bit output grid: id → (scale, zp)."""
    if not any(n.ann.quant is not None and n.ann.quant.o_scale is not None for n in graph.nodes):
        return {}
    from hwnas.backends.emit.qdq import output_point

    grids = {}
    for n in graph.nodes:
        point, q = output_point(n), n.ann.quant
        if point is not None and q is not None and q.o_scale is not None and q.o_zero_point is not None:
            grids[id(point)] = (q.o_scale, q.o_zero_point)
    return grids


def _fake_quant(node: Node, args: list[Any]) -> list[Any]:
    """QAT: the node's data input, weight (and int32 bias) on the grids `to_qdq_onnx`
    emits, with straight-through gradients; weight scales follow the current weights."""
    from hwnas.backends.emit.qdq import (
        activation_qmax,
        bias_scale_floor,
        fake_quant_bias,
        fake_quant_weight,
        quantized_bias,
        weight_axis,
    )

    q = node.ann.quant
    assert q is not None
    args = list(args)
    if q.a_bits and q.a_scale is not None and q.a_zero_point is not None:
        qmax = activation_qmax(q.a_bits)
        args[0] = torch.fake_quantize_per_tensor_affine(args[0], q.a_scale, q.a_zero_point, 0, qmax)
    if q.w_bits:
        args[1], scales = fake_quant_weight(args[1], q, weight_axis(node, args[1].dim()),
                                            bias_scale_floor(node, args[1]))
        if quantized_bias(node) and q.a_scale is not None:  # quantized_bias implies a scale
            args[2] = fake_quant_bias(args[2], q.a_scale, scales)[0]
    return args


def to_torch(graph: Graph, modules: Mapping[str, nn.Module] | None = None) -> GraphModule:
    """A trainable module that computes the graph, the nodes named in `modules` through those
    modules (see the module docstring)."""
    return GraphModule(graph, modules)


def weights_to_graph(module: GraphModule, graph: Graph | None = None) -> Graph:
    """Write the module's (trained) parameters back into the graph's constants; a weight the
    graph built at run time (ConstantOfShape) becomes a constant holding the trained values."""
    graph = graph or module.graph
    built = {n.outputs[0].name: n for n in graph.nodes if n.op == "ConstantOfShape"}
    for name, key in module._keys.items():
        array = module.params[key].detach().cpu().numpy()
        if name in graph.constants:
            v = graph.constants[name]
            v.const = array.astype(array.dtype if v.const is None else v.const.dtype, copy=True)
        elif name in built:
            node = built[name]
            out = node.outputs[0]
            const = graph.add_constant(array.astype(out.type.dtype.numpy if out.type else array.dtype, copy=True),
                                       f"{name}_trained")
            if graph.replace_value(out, const) is None:
                graph.remove_node(node)
                graph.drop_if_unused(node.input(0))
    return graph


def _pads(node: Node, rank: int) -> tuple[list[int], bool]:
    """Symmetric per-dim padding for torch, or (begin+end pads for F.pad, False)."""
    pads = node.attr_ints("pads", [0] * (2 * rank))
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
        raise UnsupportedModelError(f"node '{node.name}' ({node.op}): auto_pad SAME is not emitted to PyTorch")
    return pads, pads[:rank] == pads[rank:]


def _pad_input(x: torch.Tensor, pads: list[int], rank: int, value: float = 0.0) -> torch.Tensor:
    torch_pads: list[int] = []
    for i in reversed(range(rank)):
        torch_pads += [pads[i], pads[i + rank]]
    return F.pad(x, torch_pads, value=value)


@op("Conv")
def _conv(node: Node, a: list[Any]) -> torch.Tensor:
    x, w, b = a[0], a[1], a[2] if len(a) > 2 else None
    rank = w.dim() - 2
    pads, symmetric = _pads(node, rank)
    if not symmetric:
        x, pads = _pad_input(x, pads, rank), [0] * (2 * rank)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return fn(x, w, b, stride=node.attr_ints("strides", [1] * rank), padding=pads[:rank],
              dilation=node.attr_ints("dilations", [1] * rank), groups=node.attr_int("group", 1))


@op("Gemm")
def _gemm(node: Node, a: list[Any]) -> torch.Tensor:
    x, w = a[0], a[1]
    if node.attr("transA", 0):
        x = x.t()
    if node.attr("transB", 0):
        w = w.t()
    y = node.attr_float("alpha", 1.0) * (x @ w)
    if len(a) > 2 and a[2] is not None:
        y = y + node.attr_float("beta", 1.0) * a[2]
    return y


@op("MatMul")
def _matmul(node: Node, a: list[Any]) -> torch.Tensor:
    return torch.matmul(a[0], a[1])


@op("BatchNormalization")
def _bn(node: Node, a: list[Any]) -> torch.Tensor:
    # Running statistics are buffers, not trained: detached so autograd leaves them be.
    mean, var = a[3].detach(), a[4].detach()
    return F.batch_norm(a[0], mean, var, a[1], a[2], training=False, eps=node.attr_float("epsilon", 1e-5))


def _pool(node: Node, a: list[Any], kind: str) -> torch.Tensor:
    x = a[0]
    k = node.attr_ints("kernel_shape")
    rank = len(k)
    pads, symmetric = _pads(node, rank)
    ceil = bool(node.attr("ceil_mode", 0))
    strides = node.attr_ints("strides", [1] * rank)
    if kind == "max":
        if not symmetric:
            x, pads = _pad_input(x, pads, rank, float("-inf")), [0] * (2 * rank)
        max_pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
        return max_pool(x, k, strides, pads[:rank], node.attr_ints("dilations", [1] * rank), ceil_mode=ceil)
    include = bool(node.attr("count_include_pad", 0))
    if not symmetric:
        x, pads, include = _pad_input(x, pads, rank), [0] * (2 * rank), True
    avg_pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
    return avg_pool(x, k, strides, pads[:rank], ceil_mode=ceil, count_include_pad=include)


op("MaxPool")(lambda n, a: _pool(n, a, "max"))
op("AveragePool")(lambda n, a: _pool(n, a, "avg"))
op("GlobalAveragePool")(lambda n, a: a[0].mean(dim=tuple(range(2, a[0].dim())), keepdim=True))
op("GlobalMaxPool")(lambda n, a: a[0].amax(dim=tuple(range(2, a[0].dim())), keepdim=True))
op("Relu")(lambda n, a: F.relu(a[0]))
op("Sigmoid")(lambda n, a: torch.sigmoid(a[0]))
op("Tanh")(lambda n, a: torch.tanh(a[0]))
op("HardSwish")(lambda n, a: F.hardswish(a[0]))
op("HardSigmoid")(lambda n, a: torch.clamp(n.attr_float("alpha", 0.2) * a[0] + n.attr_float("beta", 0.5), 0, 1))
op("LeakyRelu")(lambda n, a: F.leaky_relu(a[0], n.attr_float("alpha", 0.01)))
op("PRelu")(lambda n, a: torch.where(a[0] >= 0, a[0], a[1] * a[0]))  # slope broadcast as ONNX does
op("Add", "Sum")(lambda n, a: _fold(torch.add, a))
op("Sub")(lambda n, a: a[0] - a[1])
op("Mul")(lambda n, a: a[0] * a[1])
op("Div")(lambda n, a: a[0] / a[1])
op("Identity", "Dropout")(lambda n, a: a[0])
op("LRN")(lambda n, a: F.local_response_norm(a[0], int(n.attrs["size"].value), n.attr_float("alpha", 1e-4),
                                              n.attr_float("beta", 0.75), n.attr_float("bias", 1.0)))
op("Softmax")(lambda n, a: torch.softmax(a[0], dim=n.attr_int("axis", -1)))
op("Concat")(lambda n, a: torch.cat([x for x in a if x is not None], dim=n.attr_int("axis", 0)))
op("Flatten")(lambda n, a: torch.flatten(a[0], n.attr_int("axis", 1)) if n.attr_int("axis", 1) > 0
              else a[0].reshape(1, -1))
op("Shape")(lambda n, a: torch.tensor(a[0].shape, dtype=torch.int64))
op("Transpose")(lambda n, a: a[0].permute(*n.attr_ints("perm", list(range(a[0].dim()))[::-1])))
op("Constant")(lambda n, a: torch.from_numpy(np.array(const_value(n.outputs[0]))))


def _fold(fn: Callable, a: list[Any]) -> Any:
    out = a[0]
    for x in a[1:]:
        out = fn(out, x)
    return out


@op("Clip")
def _clip(node: Node, a: list[Any]) -> torch.Tensor:
    lo = a[1] if len(a) > 1 and a[1] is not None else None
    hi = a[2] if len(a) > 2 and a[2] is not None else None
    return torch.clamp(a[0], None if lo is None else float(lo), None if hi is None else float(hi))


@op("Reshape")
def _reshape(node: Node, a: list[Any]) -> torch.Tensor:
    shape = [int(d) for d in a[1].tolist()]
    if not node.attr("allowzero", 0):
        shape = [a[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return a[0].reshape(shape)


@op("ConstantOfShape")
def _constant_of_shape(node: Node, a: list[Any]) -> torch.Tensor:
    c = const_value(node.outputs[0]) if node.outputs[0].const is not None else None
    if c is not None:
        return torch.from_numpy(np.array(c))
    fill = node.attr("value")
    value = np.asarray(fill.value if hasattr(fill, "value") else fill).reshape(-1)[0] if fill is not None else 0.0
    return torch.full([int(d) for d in a[0].tolist()], float(value))


@op("Unsqueeze")
def _unsqueeze(node: Node, a: list[Any]) -> torch.Tensor:
    axes = [int(d) for d in a[1].tolist()] if len(a) > 1 and a[1] is not None else node.attr_ints("axes")
    x = a[0]
    for ax in sorted(d % (x.dim() + len(axes)) for d in axes):
        x = x.unsqueeze(ax)
    return x


@op("Squeeze")
def _squeeze(node: Node, a: list[Any]) -> torch.Tensor:
    axes = [int(d) for d in a[1].tolist()] if len(a) > 1 and a[1] is not None else node.attr_ints("axes")
    if not axes:
        return a[0].squeeze()
    return a[0].squeeze(tuple(d % a[0].dim() for d in axes))


@op("Pad")
def _pad(node: Node, a: list[Any]) -> torch.Tensor:
    x = a[0]
    pads = [int(d) for d in (a[1].tolist() if len(a) > 1 and a[1] is not None else node.attr_ints("pads"))]
    rank = x.dim()
    if len(a) > 3 and a[3] is not None:  # pads for some axes only
        full = [0] * (2 * rank)
        axes = [int(d) % rank for d in a[3].tolist()]
        for i, ax in enumerate(axes):
            full[ax], full[ax + rank] = pads[i], pads[i + len(axes)]
        pads = full
    mode = node.attr_str("mode", "constant")
    value = float(a[2]) if len(a) > 2 and a[2] is not None and a[2].numel() else 0.0
    if mode == "constant":
        return _pad_input(x, pads, rank, value)
    torch_pads = [p for i in reversed(range(2, rank)) for p in (pads[i], pads[i + rank])]
    if any(pads[i] or pads[i + rank] for i in range(2)):
        raise UnsupportedModelError(f"node '{node.name}' (Pad): {mode} padding of the batch or channel axis")
    return F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])


@op("Gather")
def _gather(node: Node, a: list[Any]) -> torch.Tensor:
    axis = node.attr_int("axis", 0) % a[0].dim()
    idx = a[1].long()
    idx = torch.where(idx < 0, idx + a[0].shape[axis], idx)
    out = torch.index_select(a[0], axis, idx.reshape(-1))
    return out.reshape((*a[0].shape[:axis], *idx.shape, *a[0].shape[axis + 1 :]))


@op("Slice")
def _slice(node: Node, a: list[Any]) -> torch.Tensor:
    """ONNX Slice (opset 10+: starts, ends, optional axes and steps as inputs); a negative step
    runs on the flipped axis."""
    x = a[0]
    starts, ends = (t.tolist() for t in a[1:3])
    axes = a[3].tolist() if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = a[4].tolist() if len(a) > 4 and a[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    flips: list[int] = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = axis % x.dim()
        if step < 0:  # start down to end (exclusive) = the flipped axis from dim-1-start to dim-1-end
            dim = x.shape[axis]
            start = min(max(start + dim if start < 0 else start, 0), dim - 1)  # ONNX clamps as so
            end = min(max(end + dim if end < 0 else end, -1), dim - 1)
            start, end, step = dim - 1 - start, dim - 1 - end, -step
            flips.append(axis)
        index[axis] = slice(start, end, step)
    if flips:
        x = torch.flip(x, flips)
    return x[tuple(index)]
