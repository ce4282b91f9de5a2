"""IR → torch with aihwkit analog layers: every node that `map-analog` placed on tiles runs as an
aihwkit AnalogConv/AnalogLinear (real C++ inference tiles) holding the node's weights, or, for an
LSTM or GRU, as `AnalogRecurrent` (W and R on tiles, gates in torch), through the torch
emission's per-node module overrides; the rest runs as plain torch ops. A placed layer the
simulation cannot take (a grouped convolution or asymmetric padding, which aihwkit 1.2 has not)
stays digital, named with its reason in one warning."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hwnas.analog.config import rpu_config
from hwnas.backends.cost.analog import RECURRENT_OPS
from hwnas.backends.emit.torch import GraphModule, run_recurrent, to_torch
from hwnas.backends.target import Analog, Target, load_target
from hwnas.ir.graph import Graph, Node
from hwnas.ir.registry import const_value, is_static
from hwnas.passes.map_analog import LAYER_OPS, MapAnalog

if TYPE_CHECKING:
    from aihwkit.simulator.configs import InferenceRPUConfig


@dataclass
class AnalogModel:
    """A graph as a torch module whose placed layers are aihwkit analog layers."""

    module: GraphModule
    layers: dict[str, nn.Module]
    """Node name -> its aihwkit layer (AnalogConv*/AnalogLinear)."""
    digital: dict[str, str] = field(default_factory=dict)
    """Weight layers left digital -> why (map-analog's reason or aihwkit's)."""

    def program(self) -> None:
        """Program every analog layer's weights (a fresh draw of programming noise)."""
        for layer in self.layers.values():
            layer.program_analog_weights()  # type: ignore[operator]

    def drift(self, t_s: float) -> None:
        """Conductances as they are `t_s` seconds after programming (drift, read noise), and the
        drift compensation's reference read where the target has one."""
        for layer in self.layers.values():
            layer.drift_analog_weights(t_s)  # type: ignore[operator]

    def logits(self, x: np.ndarray, batch: int = 1024) -> np.ndarray:
        """The first output of the model on `x`, run `batch` samples at a time (eval mode, no grad; aihwkit's
        tiles pay per call, so large batches run several times faster)."""
        self.module.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                y = self.module(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)))
                out.append((y[0] if isinstance(y, tuple) else y).reshape(len(x[i : i + batch]), -1).numpy())
        return np.concatenate(out)


def to_analog(graph: Graph, target: str | Path | Target = "analog-pcm", *,
              compensation: bool | None = None) -> AnalogModel:
    """The graph with its placed layers on aihwkit tiles of `target` (a graph without placements is
    mapped by `map-analog` with the target's defaults first, on a copy). `compensation` overrides
    the target's global drift compensation. Warns once naming the placed layers it leaves digital."""
    tgt = target if isinstance(target, Target) else load_target(target)
    hw = tgt.section(Analog)
    if not any(n.ann.placement is not None for n in graph.nodes):
        graph = graph.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its digital layers are reported below, with aihwkit's
            MapAnalog(target=str(tgt.path) if tgt.path is not None else tgt.name).run(graph)
    layers: dict[str, nn.Module] = {}
    digital: dict[str, str] = {}
    refused: list[str] = []
    for n in graph.nodes:
        p = n.ann.placement
        if p is None or n.op not in LAYER_OPS:
            continue
        if not p.analog:
            digital[n.name] = p.reason or "placed on the digital core"
            continue
        q = n.ann.quant
        cfg = rpu_config(hw, input_bits=q.a_bits if q is not None else None, tile_rows=p.tile_rows,
                         tile_cols=p.tile_cols, compensation=compensation)
        layer = analog_layer(n, cfg)
        if isinstance(layer, str):
            digital[n.name] = f"not simulated on tiles: {layer}"
            refused.append(f"'{n.name}' ({n.op}): {layer}")
        else:
            layers[n.name] = layer
    if refused:
        warnings.warn(f"the aihwkit simulation leaves {len(refused)} placed layer(s) digital: {'; '.join(refused)}",
                      stacklevel=2)
    module = to_torch(graph, layers)
    module.eval()
    return AnalogModel(module, layers, digital)


def analog_layer(node: Node, cfg: InferenceRPUConfig) -> nn.Module | str:
    """The aihwkit layer computing `node` with its weights, or why the simulation cannot."""
    from aihwkit.nn import AnalogConv1d, AnalogConv2d, AnalogConv3d, AnalogLinear

    if node.op in RECURRENT_OPS:
        return AnalogRecurrent.of(node, cfg)
    w = const_value(node.input(1))
    if w is None:
        return "its weights are built at run time (fold-constants first)"
    bias = const_value(node.input(2)) if len(node.inputs) > 2 else None
    weight = torch.from_numpy(np.array(w, dtype=np.float32))
    b = None if bias is None else torch.from_numpy(np.array(bias, dtype=np.float32))
    layer: Any
    if node.op == "Conv":
        rank = weight.dim() - 2
        if node.attr_int("group", 1) != 1:
            return f"aihwkit 1.2 has no grouped convolution (group={node.attr_int('group', 1)})"
        pads = node.attr_ints("pads", [0] * (2 * rank))
        if pads[:rank] != pads[rank:]:
            return f"asymmetric padding {pads}"
        if node.attr_str("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return f"auto_pad {node.attr_str('auto_pad', 'NOTSET')}"
        cls = {1: AnalogConv1d, 2: AnalogConv2d, 3: AnalogConv3d}.get(rank)
        if cls is None:
            return f"a {rank}-d convolution"
        layer = cls(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]),
                    stride=node.attr_ints("strides", [1] * rank), padding=pads[:rank],
                    dilation=node.attr_ints("dilations", [1] * rank), bias=b is not None, rpu_config=cfg)
    else:
        if node.op == "Gemm":
            weight = weight if node.attr_int("transB", 0) else weight.t()
            weight = weight * node.attr_float("alpha", 1.0)
            if b is not None:
                if b.numel() not in (1, weight.shape[0]):
                    return f"a bias of shape {list(b.shape)} (one row per sample)"
                b = (b.reshape(-1) * node.attr_float("beta", 1.0)).expand(weight.shape[0]).contiguous()
        else:  # MatMul: x @ W
            x = node.input(0)
            if x is None or x.type is None or x.type.shape is None or len(x.type.shape) < 2:
                return "a MatMul of a vector (aihwkit's linear layer needs a batch)"
            weight = weight.t()
        layer = AnalogLinear(weight.shape[1], weight.shape[0], bias=b is not None, rpu_config=cfg)
    layer.set_weights(weight.contiguous(), b)
    return layer


class AnalogRecurrent(nn.Module):
    """An LSTM or GRU whose W and R products run on aihwkit tiles (an AnalogLinear each per
    direction, biases digital) and whose gates run in torch, as the analog cost model prices it;
    called, as the torch emission calls node modules, with the node's run-time inputs only."""

    def __init__(self, node: Node, w: list[nn.Module], r: list[nn.Module]) -> None:
        super().__init__()
        self.node = node
        self.w, self.r = nn.ModuleList(w), nn.ModuleList(r)
        self.fixed = {i: torch.from_numpy(np.array(const_value(v))) for i, v in enumerate(node.inputs)
                      if v is not None and is_static(v) and i not in (1, 2, 3)}
        """Constant inputs other than W, R and B (sequence lengths, initial states, peepholes)."""
        self.runtime = [i for i, v in enumerate(node.inputs) if v is not None and not is_static(v)]

    @classmethod
    def of(cls, node: Node, cfg: InferenceRPUConfig) -> AnalogRecurrent | str:
        """The module for `node` with its weights on tiles of `cfg`, or why it cannot be built."""
        from aihwkit.nn import AnalogLinear

        w, r = const_value(node.input(1)), const_value(node.input(2))
        if w is None or r is None:
            return "its weights are built at run time (fold-constants first)"
        given = node.input(3) if len(node.inputs) > 3 else None
        bias = None if given is None else const_value(given)
        if given is not None and bias is None:
            return "its bias is computed at run time"
        dirs, rows = w.shape[0], w.shape[1]
        b = np.zeros((dirs, 2 * rows), np.float32) if bias is None else np.asarray(bias, np.float32)

        def linear(matrix: np.ndarray, b: np.ndarray) -> nn.Module:
            layer = AnalogLinear(matrix.shape[1], matrix.shape[0], bias=True, rpu_config=cfg)
            layer.set_weights(torch.from_numpy(np.ascontiguousarray(matrix, np.float32)), torch.from_numpy(b.copy()))
            return layer

        return cls(node, [linear(w[d], b[d, :rows]) for d in range(dirs)],
                   [linear(r[d], b[d, rows:]) for d in range(dirs)])

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a: list[Any] = [None] * len(self.node.inputs)
        for i, t in self.fixed.items():
            a[i] = t
        for i, t in zip(self.runtime, args, strict=True):
            a[i] = t
        return run_recurrent(self.node, a, wx=lambda d, x: self.w[d](x), rh=lambda d, h: self.r[d](h))

    def _layers(self) -> list[Any]:
        return [*self.w, *self.r]

    def program_analog_weights(self) -> None:
        for layer in self._layers():
            layer.program_analog_weights()

    def drift_analog_weights(self, t_inference: float) -> None:
        for layer in self._layers():
            layer.drift_analog_weights(t_inference)

    def analog_tile_count(self) -> int:
        return sum(int(layer.analog_tile_count()) for layer in self._layers())


def analog_state_dict(model: AnalogModel) -> dict[str, Any]:
    """The model's state (analog tiles' weights and aihwkit's tile states, the digital weights) with
    only tensors and plain values, so `torch.load(..., weights_only=True)` reads it; the aihwkit
    objects left out (each layer's rpu_config, placeholders) are rebuilt from the target file."""
    plain = {k: _plain(v) for k, v in model.module.state_dict().items()}
    return {k: v for k, v in plain.items() if v is not None}


def load_analog_state(model: AnalogModel, state: dict[str, Any]) -> None:
    """Load a state that `analog_state_dict` gave into a model built from the same graph and target."""
    full = model.module.state_dict()
    for k, v in state.items():
        if isinstance(full.get(k), dict) and isinstance(v, dict):
            full[k] = {**full[k], **v}
        elif k in full:
            full[k] = v
    model.module.load_state_dict(full)


def save_analog_state(model: AnalogModel, path: Path) -> None:
    """Write `analog_state_dict(model)` to `path` (atomically), loadable with weights_only=True."""
    import io

    from hwnas.files import write_atomic

    buf = io.BytesIO()
    torch.save(analog_state_dict(model), buf)
    write_atomic(path, buf.getvalue())


def _plain(v: Any) -> Any:
    """`v` as tensors, numbers, strings, lists and dicts of them; None for anything else."""
    if isinstance(v, torch.Tensor):
        if type(v) is not torch.Tensor and type(v) is not nn.Parameter:
            return None  # aihwkit's placeholder views: rebuilt with the layer
        return v.detach().clone().as_subclass(torch.Tensor)
    if isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        items = [_plain(x) for x in v]
        return None if any(x is None for x in items) else items
    if isinstance(v, dict):
        return {k: p for k, x in v.items() if (p := _plain(x)) is not None}
    return None
