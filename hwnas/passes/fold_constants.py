"""Constant folding: nodes computed from constants alone become constants."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from hwnas.backends.sessions import session
from hwnas.errors import HwnasError
from hwnas.ir.attributes import array_to_tensor, attr_to_onnx
from hwnas.ir.graph import Graph, Node
from hwnas.ir.ops.tensor import constant_node_value
from hwnas.ir.registry import NONDETERMINISTIC_OPS
from hwnas.passes.base import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluates nodes whose inputs are all constants (with onnxruntime, the same kernels
    the model runs on) and replaces their outputs by constants; `Constant` nodes become
    graph constants. It never grows the model: a result larger than both its inputs and
    `max_elements` (ConstantOfShape filling a weight, say) stays a node. Exact."""

    name = "fold-constants"
    max_elements: int = 1024

    def run(self, graph: Graph) -> PassResult:
        changed = False
        for node in list(graph.nodes):
            if self.skip_reason(node) is not None:
                continue
            arrays = self._evaluate(node)
            if arrays is None:
                continue
            for v, a in zip(node.outputs, arrays, strict=True):
                v.replace_all_uses_with(graph.add_constant(a, f"{v.name}_folded"))
            inputs = node.inputs
            graph.remove_node(node)
            graph.drop_if_unused(*inputs)
            changed = True
        return PassResult(graph, changed)

    def skip_reason(self, node: Node) -> str | None:
        """Why this node is not folded, or None when it is."""
        if node.domain or node.op in NONDETERMINISTIC_OPS:
            return "op is not a deterministic ONNX op"
        if any(v is not None and v.const is None for v in node.inputs):
            return "an input is not a constant"
        if node.graph is not None and any(o is v for o in node.graph.outputs for v in node.outputs):
            return "output is a graph output"
        if node.op == "Constant":
            return None
        in_size = sum(v.const.size for v in node.inputs if v is not None and v.const is not None)
        for v in node.outputs:
            n = v.type.numel() if v.type is not None else None
            if n is None or (n > self.max_elements and n > in_size):
                return f"result of {n if n is not None else 'unknown'} elements would grow the model"
        return None

    def _evaluate(self, node: Node) -> list[np.ndarray] | None:
        if node.op == "Constant":
            value = constant_node_value(node)
            return None if value is None else [value]
        assert node.graph is not None
        names = [f"in{i}" if v is not None else "" for i, v in enumerate(node.inputs)]
        proto = helper.make_node(node.op, names, [f"out{i}" for i in range(len(node.outputs))])
        proto.attribute.extend(attr_to_onnx(k, a) for k, a in node.attrs.items())
        # skip_reason made sure that every present input is a constant.
        inits = [array_to_tensor(v.const, n) for v, n in zip(node.inputs, names, strict=True)
                 if v is not None and v.const is not None]
        outs = [
            helper.make_tensor_value_info(f"out{i}", int(v.type.dtype) if v.type else 0, None)
            for i, v in enumerate(node.outputs)
        ]
        g = helper.make_graph([proto], "fold", [], outs, initializer=inits)
        opsets = [helper.make_opsetid(d, v) for d, v in node.graph.opset.items()]
        model = helper.make_model(g, opset_imports=opsets)
        model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 8)
        try:
            # One small kernel: thread pools would cost more to start than the work.
            sess = session(model, optimization="disable", threads=1, source=f"node '{node.name}'", log_level=4)
            return list(sess.run(None, {}))
        except HwnasError:
            return None  # onnxruntime cannot load it: leave the node as it is
        except (onnx.onnx_cpp2py_export.checker.ValidationError, RuntimeError, ValueError,
                ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.NotImplemented,
                ort.capi.onnxruntime_pybind11_state.InvalidGraph, ort.capi.onnxruntime_pybind11_state.InvalidArgument):
            return None  # onnxruntime cannot run it: leave the node as it is
