"""Small IR graphs for the cost-model tests, built with the IR's own API."""

from __future__ import annotations

import zlib

import numpy as np

from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph, Value
from hwnas.ir.registry import refresh_types
from hwnas.ir.types import DType, TensorType


class Builder:
    def __init__(self, shape: tuple[int, ...], name: str = "g") -> None:
        self.g = Graph(name)
        # Weights drawn from the graph's own generator: the same graph whichever tests ran before
        # it in the process (a shared generator made them depend on the order xdist picked).
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.x = self.g.add_input("x", TensorType(DType.FLOAT, shape))

    def conv(self, x: Value, cout: int, k: int = 3, stride: int = 1, group: int = 1, name: str = "") -> Value:
        cin = x.type.shape[1]  # type: ignore[union-attr,index]
        w = self.g.add_constant(self.rng.standard_normal((cout, cin // group, k, k)).astype(np.float32), "w")
        b = self.g.add_constant(np.zeros(cout, np.float32), "b")
        attrs = {"kernel_shape": Attr.ints([k, k]), "strides": Attr.ints([stride, stride]),
                 "pads": Attr.ints([k // 2] * 4), "group": Attr.int(group)}
        return self._node("Conv", [x, w, b], attrs, name)

    def gemm(self, x: Value, n: int, name: str = "") -> Value:
        k = x.type.shape[1]  # type: ignore[union-attr,index]
        w = self.g.add_constant(self.rng.standard_normal((n, k)).astype(np.float32), "w")
        b = self.g.add_constant(np.zeros(n, np.float32), "b")
        return self._node("Gemm", [x, w, b], {"transB": Attr.int(1)}, name)

    def op(self, op: str, *inputs: Value, name: str = "", **attrs: Attr) -> Value:
        return self._node(op, list(inputs), attrs, name)

    def _node(self, op: str, inputs: list, attrs: dict, name: str) -> Value:
        name = name or op.lower()
        node = self.g.add_node(op, inputs, attrs=attrs, name=name, output_names=[f"{name}_y"])
        refresh_types(self.g)
        return node.outputs[0]

    def done(self, *outputs: Value) -> Graph:
        self.g.outputs = list(outputs)
        refresh_types(self.g)
        return self.g


def conv_net(hw: int = 32, channels: int = 32, name: str = "convnet") -> Graph:
    """conv-relu, depthwise-relu, pointwise, global pool, flatten, gemm."""
    b = Builder((1, 3, hw, hw), name)
    y = b.op("Relu", b.conv(b.x, channels, name="conv1"), name="relu1")
    y = b.op("Relu", b.conv(y, channels, group=channels, name="dw"), name="relu2")
    y = b.conv(y, 2 * channels, k=1, name="pw")
    y = b.op("GlobalAveragePool", y, name="gap")
    y = b.op("Flatten", y, name="flat")
    return b.done(b.gemm(y, 10, name="fc"))
