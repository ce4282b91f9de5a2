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
Reduction = Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]
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

    def trainable(self) -> list[nn.Parameter]:
        """The parameters training updates: all (those of `modules=` too) but BatchNorm's running
        mean and variance, which, as in PyTorch, training leaves as they are."""
        frozen = {self._keys[v.name] for n in self.graph.nodes if n.op == "BatchNormalization"
                  for v in n.inputs[3:5] if v is not None and v.name in self._keys}
        return [p for name, p in self.named_parameters() if name.removeprefix("params.") not in frozen]

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


def _pads(node: Node, x: torch.Tensor, kernel: list[int]) -> tuple[list[int], bool]:
    """Begin+end pads per spatial dim (auto_pad's SAME_UPPER/SAME_LOWER worked out as ONNX
    does, the odd one at the end or the beginning), and whether they are symmetric."""
    rank = len(kernel)
    auto = node.attr_str("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        strides = node.attr_ints("strides", [1] * rank)
        dilations = node.attr_ints("dilations", [1] * rank)
        total = [max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
                 for n, s, k, d in zip(x.shape[2:], strides, kernel, dilations, strict=True)]
        small = [t // 2 for t in total]
        large = [t - h for t, h in zip(total, small, strict=True)]
        pads = small + large if auto == "SAME_UPPER" else large + small
    else:
        pads = node.attr_ints("pads", [0] * (2 * rank))
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
    pads, symmetric = _pads(node, x, list(w.shape[2:]))
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
    pads, symmetric = _pads(node, x, k)
    ceil = bool(node.attr("ceil_mode", 0))
    strides = node.attr_ints("strides", [1] * rank)
    if kind == "max":
        if not symmetric:
            x, pads = _pad_input(x, pads, rank, float("-inf")), [0] * (2 * rank)
        max_pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
        return max_pool(x, k, strides, pads[:rank], node.attr_ints("dilations", [1] * rank), ceil_mode=ceil)
    include = bool(node.attr("count_include_pad", 0))
    avg_pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
    if symmetric:
        return avg_pool(x, k, strides, pads[:rank], ceil_mode=ceil, count_include_pad=include)
    # Padded here; without count_include_pad each window's mean is over its real elements only.
    y = avg_pool(_pad_input(x, pads, rank), k, strides, 0, ceil_mode=ceil, count_include_pad=True)
    if include:
        return y
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    return y / avg_pool(_pad_input(ones, pads, rank), k, strides, 0, ceil_mode=ceil, count_include_pad=True)


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
    # PyTorch pads the last 1-3 axes of a batch in these modes: the padded axes must be trailing.
    padded = [i for i in range(rank) if pads[i] or pads[i + rank]]
    if not padded:
        return x
    first = padded[0]
    if rank - first > 3:
        raise UnsupportedModelError(f"node '{node.name}' (Pad): {mode} padding of more than the last three axes")
    torch_pads = [p for i in reversed(range(first, rank)) for p in (pads[i], pads[i + rank])]
    batch = x.reshape(1, -1, *x.shape[first:])
    y = F.pad(batch, torch_pads, mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])
    return y.reshape(*x.shape[:first], *y.shape[2:])


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


def _unary(fn: Callable[[Any], Any]) -> OpFn:
    return lambda n, a: fn(a[0])


def _binary(fn: Callable[[Any, Any], Any]) -> OpFn:
    return lambda n, a: fn(a[0], a[1])


def _reduction(fn: Reduction) -> OpFn:
    return lambda n, a: _reduce(n, a, fn)


# Element-wise math, comparisons and logic: ONNX's broadcasting is numpy's, as torch's is.
_MATH: dict[str, Callable[[Any], Any]] = {
    "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log, "Abs": torch.abs, "Neg": torch.neg,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Sign": torch.sign, "Erf": torch.erf, "Sin": torch.sin, "Cos": torch.cos, "Not": torch.logical_not,
    "Softplus": F.softplus, "Softsign": F.softsign}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "Equal": torch.eq, "Less": torch.lt, "LessOrEqual": torch.le, "Greater": torch.gt, "GreaterOrEqual": torch.ge,
    "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor}
for _name, _fn in _MATH.items():
    op(_name)(_unary(_fn))
for _name, _fn2 in _COMPARE.items():
    op(_name)(_binary(_fn2))
op("Max")(lambda n, a: _fold(torch.maximum, a))
op("Min")(lambda n, a: _fold(torch.minimum, a))
op("Mean")(lambda n, a: _fold(torch.add, a) / len(a))
op("Pow")(lambda n, a: torch.pow(a[0], a[1]).to(a[0].dtype))  # ONNX: the result has the base's type
op("Where")(lambda n, a: torch.where(a[0], a[1], a[2]))
op("Elu")(lambda n, a: F.elu(a[0], n.attr_float("alpha", 1.0)))
op("Selu")(lambda n, a: n.attr_float("gamma", 1.0507009873554805)
           * F.elu(a[0], n.attr_float("alpha", 1.6732632423543772)))
op("Expand")(lambda n, a: a[0].broadcast_to(torch.broadcast_shapes(a[0].shape, tuple(int(d) for d in a[1].tolist()))))
op("Range")(lambda n, a: torch.arange(a[0].item(), a[1].item(), a[2].item(), dtype=a[0].dtype))
op("Tile")(lambda n, a: a[0].repeat(*(int(d) for d in a[1].tolist())))


@op("Cast")
def _cast(node: Node, a: list[Any]) -> torch.Tensor:
    from onnx import helper

    to = node.attr_int("to", 0)
    try:
        dtype = torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(to))).dtype
    except (KeyError, TypeError, ValueError):
        raise UnsupportedModelError(f"node '{node.name}' (Cast): no PyTorch type for ONNX type {to}") from None
    return a[0].to(dtype)


@op("Split")
def _split(node: Node, a: list[Any]) -> tuple[torch.Tensor, ...]:
    """Sizes from the `split` input or attribute; else `num_outputs` (opset 18) or one part per
    output, equal but for a smaller last part, as ONNX splits."""
    x, axis = a[0], node.attr_int("axis", 0)
    sizes = a[1].tolist() if len(a) > 1 and a[1] is not None else node.attr_ints("split")
    if not sizes:
        parts = node.attr_int("num_outputs", len(node.outputs))
        sizes = -(-x.shape[axis] // parts)
    return torch.split(x, sizes, dim=axis)


def _reduce(node: Node, a: list[Any], fn: Reduction) -> Any:
    """ONNX's Reduce*: axes from the input (ReduceSum since opset 13, the rest since 18) or the
    attribute; none means all axes, or the input unchanged under `noop_with_empty_axes`."""
    x = a[0]
    axes = a[1].tolist() if len(a) > 1 and a[1] is not None else node.attr_ints("axes")
    if not axes:
        if node.attr_int("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    return fn(x, tuple(int(d) % x.dim() for d in axes), bool(node.attr_int("keepdims", 1)))


_REDUCTIONS: dict[str, Reduction] = {
        "ReduceMean": lambda x, d, k: x.mean(d, keepdim=k), "ReduceSum": lambda x, d, k: x.sum(d, keepdim=k),
        "ReduceMax": lambda x, d, k: x.amax(d, keepdim=k), "ReduceMin": lambda x, d, k: x.amin(d, keepdim=k),
        "ReduceL1": lambda x, d, k: x.abs().sum(d, keepdim=k),
        "ReduceL2": lambda x, d, k: torch.linalg.vector_norm(x, 2, d, keepdim=k),
        "ReduceSumSquare": lambda x, d, k: (x * x).sum(d, keepdim=k),
        "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k)}
for _name, _reduce_fn in _REDUCTIONS.items():
    op(_name)(_reduction(_reduce_fn))


def _arg(node: Node, a: list[Any], fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    x, axis, keep = a[0], node.attr_int("axis", 0) % a[0].dim(), bool(node.attr_int("keepdims", 1))
    if node.attr_int("select_last_index", 0):  # the first index of the flipped axis, counted back
        return x.shape[axis] - 1 - fn(torch.flip(x, (axis,)), axis, keepdim=keep)
    return fn(x, axis, keepdim=keep)


op("ArgMax")(lambda n, a: _arg(n, a, torch.argmax))
op("ArgMin")(lambda n, a: _arg(n, a, torch.argmin))


@op("LayerNormalization")
def _layer_norm(node: Node, a: list[Any]) -> Any:
    """Over the axes from `axis` on; the optional Mean and InvStdDev outputs too, in float."""
    x, axis, eps = a[0], node.attr_int("axis", -1) % a[0].dim(), node.attr_float("epsilon", 1e-5)
    scale, bias = a[1], a[2] if len(a) > 2 else None
    y = F.layer_norm(x, tuple(x.shape[axis:]), scale.broadcast_to(x.shape[axis:]),
                     None if bias is None else bias.broadcast_to(x.shape[axis:]), eps)
    if len(node.outputs) == 1:
        return y
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dims, keepdim=True)
    inv_std = torch.rsqrt(((x - mean) ** 2).mean(dims, keepdim=True) + eps)
    return y, mean, inv_std


op("Einsum")(lambda n, a: torch.einsum(n.attr_str("equation", ""), *a))
op("InstanceNormalization")(lambda n, a: F.instance_norm(a[0], weight=a[1], bias=a[2],
                                                          eps=n.attr_float("epsilon", 1e-5)))


@op("DepthToSpace")
def _depth_to_space(node: Node, a: list[Any]) -> torch.Tensor:
    """CRD mode is PyTorch's pixel shuffle; DCR (ONNX's default) takes the block offsets from
    the outer part of the channels."""
    x, b = a[0], node.attr_int("blocksize", 1)
    if node.attr_str("mode", "DCR") == "CRD":
        return F.pixel_shuffle(x, b)
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth")
def _space_to_depth(node: Node, a: list[Any]) -> torch.Tensor:
    """The inverse of DepthToSpace in DCR mode: block offsets become the outer part of the channels."""
    x, b = a[0], node.attr_int("blocksize", 1)
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@op("ConvTranspose")
def _conv_transpose(node: Node, a: list[Any]) -> torch.Tensor:
    """Unpadded, then cropped by `pads` (which may differ at the two ends)."""
    x, w, b = a[0], a[1], a[2] if len(a) > 2 else None
    rank = w.dim() - 2
    if node.attr("output_shape") is not None or node.attr_str("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(f"node '{node.name}' (ConvTranspose): output_shape or auto_pad SAME "
                                    "is not emitted to PyTorch; give pads instead")
    pads = node.attr_ints("pads", [0] * (2 * rank))
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    y = fn(x, w, b, stride=node.attr_ints("strides", [1] * rank),
           output_padding=node.attr_ints("output_padding", [0] * rank), groups=node.attr_int("group", 1),
           dilation=node.attr_ints("dilations", [1] * rank))
    crop = (slice(None), slice(None), *(slice(pads[i], y.shape[2 + i] - pads[i + rank]) for i in range(rank)))
    return y[crop]


_NEAREST: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": lambda c: np.ceil(c - 0.5), "round_prefer_ceil": lambda c: np.floor(c + 0.5),
    "floor": np.floor, "ceil": np.ceil}
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


@op("Resize")
def _resize(node: Node, a: list[Any]) -> torch.Tensor:
    """Nearest by ONNX's own source-index formulas (every coordinate transform and rounding
    mode), linear and cubic through `F.interpolate` where its sampling is ONNX's (half_pixel,
    pytorch_half_pixel, align_corners); other modes are refused, naming the node."""
    x = a[0]
    scales = a[2] if len(a) > 2 and a[2] is not None and a[2].numel() else None
    sizes = a[3] if len(a) > 3 and a[3] is not None and a[3].numel() else None
    where = f"node '{node.name}' (Resize)"
    if node.attr("axes") is not None or node.attr_int("antialias", 0) \
            or node.attr_str("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedModelError(f"{where}: axes, antialias and keep_aspect_ratio_policy are not emitted to "
                                    "PyTorch")
    if sizes is not None:
        out = [int(d) for d in sizes.tolist()]
        factor = [o / i for o, i in zip(out, x.shape, strict=True)]
    elif scales is not None:
        factor = [float(s) for s in scales.tolist()]
        out = [int(np.floor(i * s)) for i, s in zip(x.shape, factor, strict=True)]
    else:
        raise UnsupportedModelError(f"{where}: neither scales nor sizes given")
    if out[:2] != list(x.shape[:2]):
        raise UnsupportedModelError(f"{where}: resizing the batch or channel axis is not emitted to PyTorch")
    mode, transform = node.attr_str("mode", "nearest"), node.attr_str("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        rounding = _NEAREST.get(node.attr_str("nearest_mode", "round_prefer_floor"))
        if rounding is None or transform == "tf_crop_and_resize":
            raise UnsupportedModelError(f"{where}: nearest with {transform} is not emitted to PyTorch")
        for axis in range(2, x.dim()):
            src = _source_coordinates(transform, np.arange(out[axis]), x.shape[axis], out[axis], factor[axis])
            index = np.clip(rounding(src), 0, x.shape[axis] - 1).astype(np.int64)
            x = torch.index_select(x, axis, torch.from_numpy(index))
        return x
    if mode not in ("linear", "cubic") or transform not in ("half_pixel", "pytorch_half_pixel", "align_corners") \
            or (mode == "cubic" and (node.attr_float("cubic_coeff_a", -0.75) != -0.75
                                     or node.attr_int("exclude_outside", 0) or x.dim() != 4)):
        raise UnsupportedModelError(f"{where}: {mode} with {transform} is not emitted to PyTorch")
    if transform == "half_pixel" and any(o == 1 for o in out[2:]):  # where it and PyTorch's part ways
        raise UnsupportedModelError(f"{where}: half_pixel to a length of 1 is not emitted to PyTorch")
    kind = _LINEAR[x.dim() - 2] if mode == "linear" else "bicubic"
    align = transform == "align_corners"
    if sizes is not None:
        return F.interpolate(x, size=out[2:], mode=kind, align_corners=align)
    return F.interpolate(x, scale_factor=factor[2:], mode=kind, align_corners=align, recompute_scale_factor=False)


def _source_coordinates(transform: str, dst: np.ndarray, length: int, out: int, scale: float) -> np.ndarray:
    """ONNX Resize's coordinate transform: where output index `dst` samples the input axis."""
    if transform == "half_pixel":
        return (dst + 0.5) / scale - 0.5
    if transform == "pytorch_half_pixel":
        return (dst + 0.5) / scale - 0.5 if out > 1 else np.zeros_like(dst, dtype=float)
    if transform == "align_corners":
        return dst * (length - 1) / (out - 1) if out > 1 else np.zeros_like(dst, dtype=float)
    if transform == "asymmetric":
        return dst / scale
    if transform == "half_pixel_symmetric":
        adjustment = out / (scale * length)
        center = length / 2
        offset = center * (1 - adjustment)
        return offset + (dst + 0.5) / scale - 0.5
    raise UnsupportedModelError(f"Resize: coordinate transform {transform} is not emitted to PyTorch")


Affine = Callable[[int, torch.Tensor], torch.Tensor]
"""A recurrent layer's W or R product for direction d, its bias added: (d, x) -> x @ M[d].T + b[d]."""


def run_recurrent(node: Node, a: list[Any], wx: Affine | None = None, rh: Affine | None = None) -> tuple[Any, ...]:
    """ONNX's LSTM (gates i, o, f, c; peepholes P as i, o, f), GRU (gates z, r, h;
    `linear_before_reset` either way) or RNN (tanh) on inputs `a` in ONNX's order, one time step
    at a time.
    The W and R products are `wx` and `rh` where given (aihwkit tiles, say), else from W, R and B
    in `a`. What PyTorch emission does not cover (activations other than the defaults, clip,
    sequence lengths shorter than the sequence, LSTM's input_forget, the batch-major layout 1,
    which onnxruntime does not run either) is refused, naming the node."""
    where = f"node '{node.name}' ({node.op})"
    if node.attr("activations") is not None or node.attr("clip") is not None or node.attr_int("input_forget", 0) \
            or node.attr_int("layout", 0):
        raise UnsupportedModelError(f"{where}: activations, clip, input_forget and layout 1 are not emitted to PyTorch")
    x = a[0]
    lens = a[4] if len(a) > 4 and a[4] is not None else None
    if lens is not None and bool((lens != x.shape[0]).any()):
        raise UnsupportedModelError(f"{where}: sequence_lens shorter than the sequence are not emitted to PyTorch")
    hidden = node.attr_int("hidden_size", 0)
    dirs = 2 if node.attr_str("direction", "forward") == "bidirectional" else 1
    if wx is None or rh is None:
        w, r = a[1], a[2]
        b = a[3] if len(a) > 3 and a[3] is not None else torch.zeros(dirs, 2 * w.shape[1], dtype=x.dtype)
        wx = lambda d, v: v @ w[d].T + b[d][: w.shape[1]]  # noqa: E731 - two closures over the same weights
        rh = lambda d, v: v @ r[d].T + b[d][w.shape[1]:]  # noqa: E731
    states = [a[i] if len(a) > i and a[i] is not None else torch.zeros(dirs, x.shape[1], hidden, dtype=x.dtype)
              for i in (5, 6)]
    reverse = list(range(x.shape[0]))[::-1]
    orders = [reverse] if node.attr_str("direction", "forward") == "reverse" else [list(range(x.shape[0])), reverse]
    step = {"LSTM": _lstm_step, "GRU": _gru_step, "RNN": _rnn_step}[node.op]
    ys, finals = [], []
    for d, order in enumerate(orders[:dirs]):
        state = (states[0][d], states[1][d])
        out: list[Any] = [None] * x.shape[0]
        for t in order:
            state = step(node, a, d, x[t], state, wx, rh)
            out[t] = state[0]
        ys.append(out)
        finals.append(state)
    y = torch.stack([torch.stack(o) for o in ys], 1)  # [seq, dirs, batch, hidden]
    h_n = torch.stack([f[0] for f in finals])
    return (y, h_n, torch.stack([f[1] for f in finals])) if node.op == "LSTM" else (y, h_n)


def _lstm_step(node: Node, a: list[Any], d: int, x: Any, state: tuple[Any, Any], wx: Affine,
               rh: Affine) -> tuple[Any, Any]:
    h, c = state
    p = a[7] if len(a) > 7 and a[7] is not None else None
    pi, po, pf = p[d].chunk(3) if p is not None else (0, 0, 0)
    i, o, f, g = (wx(d, x) + rh(d, h)).chunk(4, -1)
    i, f = torch.sigmoid(i + pi * c), torch.sigmoid(f + pf * c)
    c = f * c + i * torch.tanh(g)
    return torch.sigmoid(o + po * c) * torch.tanh(c), c


def _gru_step(node: Node, a: list[Any], d: int, x: Any, state: tuple[Any, Any], wx: Affine,
              rh: Affine) -> tuple[Any, Any]:
    h = state[0]
    xz, xr, xh = wx(d, x).chunk(3, -1)
    hz, hr, hh = rh(d, h).chunk(3, -1)
    z, reset = torch.sigmoid(xz + hz), torch.sigmoid(xr + hr)
    # Without linear_before_reset the reset gate scales h before R: R's product is taken again.
    inner = reset * hh if node.attr_int("linear_before_reset", 0) else rh(d, reset * h).chunk(3, -1)[2]
    return (1 - z) * torch.tanh(xh + inner) + z * h, state[1]


def _rnn_step(node: Node, a: list[Any], d: int, x: Any, state: tuple[Any, Any], wx: Affine,
              rh: Affine) -> tuple[Any, Any]:
    return torch.tanh(wx(d, x) + rh(d, state[0])), state[1]


op("LSTM", "GRU", "RNN")(run_recurrent)
