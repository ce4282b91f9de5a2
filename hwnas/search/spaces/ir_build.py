"""Building candidate networks directly as IR, node for node what the torch frontend makes of
the spaces' torch modules (BatchNorm after a conv folded into its weights and bias, ReLU6 as
Clip between two Constant nodes, `none` edges as a Mul by a Constant zero), without tracing.

Types are set as the nodes are made (no shape inference), and weights are random (He-scaled
normal, from the builder's seed): a candidate built here is for pricing, running and
compiling, not for its accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph, Value
from hwnas.ir.types import DType, TensorType


def _conv_attrs(kernel: int, stride: int, pad: int, groups: int) -> dict[str, Attr]:
    return {"dilations": Attr.ints((1, 1)), "group": Attr.int(groups), "kernel_shape": Attr.ints((kernel, kernel)),
            "pads": Attr.ints((pad,) * 4), "strides": Attr.ints((stride, stride))}


class IRBuilder:
    """Appends nodes to a graph of one NCHW float input; every method returns the new value.

    Weightless ops (Relu, AveragePool, the zero Mul, Add) applied twice to the same inputs give
    the first node's value, as the torch exporter's common-subexpression elimination does (two
    NAS-Bench-201 edges from one node share their ReLU; two `none` edges share x * 0)."""

    def __init__(self, name: str, input_shape: tuple[int, ...], seed: int = 0) -> None:
        self.graph = Graph(name)
        self.rng = np.random.default_rng(seed)
        self.input = self.graph.add_input("input", TensorType(DType.FLOAT, tuple(input_shape)))
        self._made: dict[tuple[object, ...], Value] = {}

    def _once(self, key: tuple[object, ...], make: Callable[[], Value]) -> Value:
        value = self._made.get(key)
        if value is None:
            value = self._made[key] = make()
        return value

    def _node(self, op: str, inputs: Sequence[Value | None], shape: tuple[int, ...], name: str,
              attrs: dict[str, Attr] | None = None) -> Value:
        node = self.graph.add_node(op, inputs, attrs=attrs, name=name, output_names=[f"{name}_output_0"],
                                   output_types=[TensorType(DType.FLOAT, shape)])
        return node.outputs[0]

    def weight(self, shape: tuple[int, ...], name: str, fan_in: int) -> Value:
        """A float32 constant drawn He-scaled from the builder's generator."""
        array = self.rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2.0 / max(fan_in, 1)))
        return self.graph.add_constant(array, name)

    def conv(self, x: Value, c_out: int, kernel: int, stride: int, name: str, groups: int = 1,
             bias: bool = True) -> Value:
        """A Conv with "same" padding at stride 1 (torch's kernel // 2); `bias` as after a folded BatchNorm."""
        n, c_in, h, w = _shape(x)
        pad = (kernel - 1) // 2
        fan_in = c_in // groups * kernel * kernel
        inputs = [x, self.weight((c_out, c_in // groups, kernel, kernel), f"{name}.weight", fan_in)]
        if bias:
            inputs.append(self.weight((c_out,), f"{name}.bias", fan_in))
        out = ((h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1)
        return self._node("Conv", inputs, (n, c_out, *out), f"{name}/Conv", _conv_attrs(kernel, stride, pad, groups))

    def relu(self, x: Value, name: str) -> Value:
        """Relu."""
        return self._once(("Relu", id(x)), lambda: self._node("Relu", [x], _shape(x), f"{name}/Relu"))

    def relu6(self, x: Value, name: str) -> Value:
        """ReLU6 as the frontend writes it: Clip(x, Constant 0, Constant 6)."""
        lo = self.constant_node(0.0, f"{name}/Constant")
        hi = self.constant_node(6.0, f"{name}/Constant_1")
        return self._node("Clip", [x, lo, hi], _shape(x), f"{name}/Clip")

    def constant_node(self, value: float, name: str) -> Value:
        """A Constant node holding a float32 scalar."""
        return self._node("Constant", [], (), name, {"value": Attr.tensor(np.array(value, dtype=np.float32))})

    def zero(self, x: Value, name: str) -> Value:
        """The NAS-Bench-201 `none` op: x * Constant(0)."""
        return self._once(("zero", id(x)), lambda: self._node(
            "Mul", [x, self.constant_node(0.0, f"{name}/Constant")], _shape(x), f"{name}/Mul"))

    def add(self, a: Value, b: Value, name: str) -> Value:
        """Add of two values of one shape."""
        return self._once(("Add", id(a), id(b)), lambda: self._node("Add", [a, b], _shape(a), name))

    def avg_pool(self, x: Value, kernel: int, stride: int, pad: int, name: str, count_include_pad: bool) -> Value:
        """AveragePool (floor mode)."""
        n, c, h, w = _shape(x)
        shape = (n, c, (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1)
        attrs = {"ceil_mode": Attr.int(0), "count_include_pad": Attr.int(int(count_include_pad)),
                 "kernel_shape": Attr.ints((kernel, kernel)), "pads": Attr.ints((pad,) * 4),
                 "strides": Attr.ints((stride, stride))}
        key = ("AveragePool", id(x), kernel, stride, pad, count_include_pad)
        return self._once(key, lambda: self._node("AveragePool", [x], shape, f"{name}/AveragePool", attrs))

    def batch_norm(self, x: Value, name: str) -> Value:
        """Inference BatchNormalization with unit statistics and random scale and shift."""
        c = _shape(x)[1]
        params = [self.graph.add_constant(a.astype(np.float32), f"{name}.{p}") for p, a in
                  (("weight", 1.0 + 0.1 * self.rng.standard_normal(c)), ("bias", 0.1 * self.rng.standard_normal(c)),
                   ("running_mean", np.zeros(c)), ("running_var", np.ones(c)))]
        attrs = {"epsilon": Attr.float(float(np.float32(1e-5))), "momentum": Attr.float(float(np.float32(0.9))),
                 "training_mode": Attr.int(0)}
        return self._node("BatchNormalization", [x, *params], _shape(x), f"{name}/BatchNormalization", attrs)

    def classifier(self, x: Value, num_classes: int, name: str) -> Value:
        """GlobalAveragePool, Flatten and a Gemm to `num_classes`; the graph's output."""
        n, c = _shape(x)[:2]
        pooled = self._node("GlobalAveragePool", [x], (n, c, 1, 1), "/GlobalAveragePool")
        flat = self._node("Flatten", [pooled], (n, c), "/Flatten", {"axis": Attr.int(1)})
        w = self.weight((num_classes, c), f"{name}.weight", c)
        b = self.weight((num_classes,), f"{name}.bias", c)
        node = self.graph.add_node("Gemm", [flat, w, b], name=f"{name}/Gemm", output_names=["output"],
                                   output_types=[TensorType(DType.FLOAT, (n, num_classes))],
                                   attrs={"alpha": Attr.float(1.0), "beta": Attr.float(1.0), "transB": Attr.int(1)})
        self.graph.outputs.append(node.outputs[0])
        return node.outputs[0]


def _shape(v: Value) -> tuple[int, ...]:
    shape = v.type.static_shape if v.type is not None else None
    assert shape is not None, f"{v.name} has no static shape"
    return shape
