"""BatchNormalization folding into the Conv or Gemm that feeds it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.ir.graph import Graph, Node, Value
from hwnas.passes.base import Pass, PassResult, register_pass
from hwnas.passes.eliminate_noops import bypass_reason
from hwnas.passes.rewrite import Rule, apply_rules


def _producer(bn: Node) -> Node | None:
    x = bn.input(0)
    return x.producer if x is not None else None


def _const(v: Value | None) -> np.ndarray | None:
    """The array of a graph constant (not of a Constant node's output: the fold reads `const`)."""
    return None if v is None else v.const


def _array(v: Value | None) -> np.ndarray:
    """The array of a constant that `_check` found."""
    a = _const(v)
    assert a is not None
    return a


def _check(bn: Node) -> str | None:
    if any(o.uses for o in bn.outputs[1:]):
        return "batch statistics outputs are read (training mode)"
    if bn.attr_int("training_mode", 0):
        return "training_mode is on"
    if any(_const(bn.input(i)) is None for i in range(1, 5)):
        return "scale, bias, mean or variance is not a constant"
    p = _producer(bn)
    if p is None or p.domain or p.op not in ("Conv", "Gemm"):
        return "input is not produced by a Conv or Gemm"
    x = bn.operand(0)
    if len(x.uses) != 1:
        return f"{p.op} output has other readers"
    if bn.graph is not None and bn.graph.is_output(x):
        return f"{p.op} output is also a graph output"  # folding would change that output
    w = _const(p.input(1))
    if w is None:
        return f"{p.op} weight is not a constant"
    c = p.input(2)
    if c is not None and c.const is None:
        return f"{p.op} bias is not a constant"
    if p.op == "Gemm":
        if p.attr_float("beta", 1.0) != 1.0 and c is not None:
            return "Gemm has beta != 1"
        n = _gemm_n(p, w)
        # C of shape (n, 1) has n elements too, but it broadcasts along rows.
        if c is not None and c.const is not None and c.const.size != 1 \
                and (c.const.size != n or c.const.shape[-1] != n):
            return "Gemm bias is not per output column"
    return bypass_reason(bn, x)


def _gemm_n(gemm: Node, w: np.ndarray) -> int:
    return int(w.shape[0] if gemm.attr_int("transB", 0) else w.shape[1])


def _fold(bn: Node) -> None:
    graph = bn.graph
    p = _producer(bn)
    assert graph is not None and p is not None
    scale, beta, mean, var = (_array(bn.input(i)).astype(np.float64) for i in range(1, 5))
    s = scale / np.sqrt(var + bn.attr_float("epsilon", 1e-5))
    w = _array(p.input(1))
    dtype = w.dtype
    if p.op == "Conv":
        new_w = w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))
    elif p.attr_int("transB", 0):
        new_w = w.astype(np.float64) * s[:, None]
    else:
        new_w = w.astype(np.float64) * s[None, :]
    old_weight, old_bias = p.input(1), p.input(2)
    bias = _array(old_bias).astype(np.float64).reshape(-1) if old_bias is not None else 0.0
    new_b = (bias - mean) * s + beta
    p.set_input(1, graph.add_constant(new_w.astype(dtype), f"{p.name}_w_bnfolded"))
    new_b = new_b if new_b.shape == s.shape else np.broadcast_to(new_b, s.shape)
    b = graph.add_constant(new_b.astype(dtype), f"{p.name}_b_bnfolded")
    if old_bias is None:
        p.attrs.pop("beta", None)  # beta scaled no bias before; the new bias must not be scaled
    if len(p.inputs) > 2:
        p.set_input(2, b)
    else:
        p.set_inputs([*p.inputs, b])
    old = [old_weight, *bn.inputs[1:]]
    graph.replace_value(bn.outputs[0], bn.operand(0))
    graph.remove_node(bn)
    graph.drop_if_unused(*old, old_bias)


RULES = (Rule("BatchNormalization(Conv|Gemm(x, w, b)) -> Conv|Gemm(x, w*s, (b-mean)*s+beta)",
              ("BatchNormalization",), _check, _fold),)


@register_pass
@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    """Folds an inference-mode BatchNormalization into the Conv or Gemm before it, when that
    node's weights and the BN's parameters are constants and nothing else reads the
    conv's output. Arithmetic is done in float64 and rounded once; outputs agree within
    `tolerance`."""

    name = "fold-batchnorm"
    tolerance = 1e-5

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, apply_rules(graph, RULES).changed)
