"""Zero padding folded into the Conv that reads it (exporters of "same" padding write a Pad)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph, Node
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.rewrite import Rule, apply_rules


def _pads(pad: Node) -> np.ndarray | None:
    v = pad.input(1)
    if v is not None:
        return None if v.const is None else np.asarray(v.const, np.int64).ravel()
    p = pad.attr("pads")
    return None if p is None else np.asarray(p, np.int64)


def _check(pad: Node) -> str | None:
    if pad.attr_str("mode", "constant") != "constant":
        return "mode is not constant"
    value = pad.input(2)
    if value is not None and (value.const is None or np.any(value.const != 0)):
        return "pads with a value other than 0"
    if pad.input(3) is not None:
        return "pads chosen axes"
    pads = _pads(pad)
    if pads is None:
        return "pads are not a constant"
    rank = len(pads) // 2
    if rank < 3 or np.any(pads < 0) or np.any(pads[[0, 1, rank, rank + 1]] != 0):
        return "pads the batch or channel axis, or crops"
    users = pad.outputs[0].users
    if len(users) != 1 or users[0].op != "Conv" or users[0].domain or users[0].input(0) is not pad.outputs[0]:
        return "is not read by one Conv alone"
    if pad.graph is not None and pad.graph.is_output(pad.outputs[0]):
        return "output is a graph output"
    if users[0].attr_str("auto_pad", "NOTSET") != "NOTSET":
        return "the Conv uses auto_pad"
    return None


def _fold(pad: Node) -> None:
    conv = pad.outputs[0].users[0]
    pads = _pads(pad)
    assert pads is not None and pad.graph is not None
    rank = len(pads) // 2
    spatial = rank - 2
    old = conv.attr_ints("pads", [0] * (2 * spatial))
    new = [old[i] + int(pads[2 + i]) for i in range(spatial)] + \
          [old[spatial + i] + int(pads[rank + 2 + i]) for i in range(spatial)]
    conv.attrs["pads"] = Attr.ints(new)
    conv.set_input(0, pad.input(0))
    graph, inputs = pad.graph, pad.inputs
    graph.remove_node(pad)
    graph.drop_if_unused(*inputs)


RULES = (Rule("Conv(Pad(x, zeros on H, W)) -> Conv(x) with pads", ("Pad",), _check, _fold),)


@register_pass
@dataclass(frozen=True)
class FoldPad(Pass):
    """Folds a constant zero Pad of the spatial axes into the Conv that alone reads it, as
    extra `pads`: one kernel instead of a copy and a kernel, and no float op between a
    quantized Conv and its input. Exact."""

    name = "fold-pad"

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, apply_rules(graph, RULES).changed)
