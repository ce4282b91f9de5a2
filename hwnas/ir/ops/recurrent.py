"""Recurrent layers: LSTM, GRU and the plain RNN, and onnxruntime's dynamically quantized LSTM
(com.microsoft::DynamicQuantizeLSTM, what `quantize_dynamic` makes of an LSTM: 8-bit W and R
stored transposed, [directions, input, 4·hidden], with per-direction scales and zero points).

Each time step of each direction multiplies the input vector by W (gates·hidden × input) and
the previous hidden state by R (gates·hidden × hidden), then runs the gates' element-wise
math. Shapes come from onnx's own inference (it handles layouts and optional outputs); the
work is counted from the inputs, so it holds whichever outputs the node keeps.
"""

from __future__ import annotations

from hwnas.ir.graph import Node
from hwnas.ir.ops.common import in_type
from hwnas.ir.ops.elementwise import UNARY_COST
from hwnas.ir.registry import OpTraits, Work, declare_traits, infer, work
from hwnas.ir.types import Dim, TensorType

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
"""Gate blocks stacked in W and R."""
SIGMOID_GATES = {"LSTM": 3, "GRU": 2, "RNN": 1}
"""Gates that run the first activation (f): LSTM's i, o, f; GRU's z, r; the plain RNN's one."""
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
# FLOPs per hidden unit and step besides the activations: adding the W·x and R·h products of each
# gate, then the state update (LSTM: c = f⊙c + i⊙g, h = o⊙h(c); GRU: r⊙(R·h), h = (1-z)⊙ĥ + z⊙h).
STATE_FLOPS = {"LSTM": 4 + 4, "GRU": 3 + 5, "RNN": 1}
# Activations ONNX allows in recurrent layers that are not element-wise ops of their own.
OTHER_ACTIVATION_COST = {"Affine": 2, "ScaledTanh": 10}

# W (1), R (2) and B (3) are the layer's weights; the peepholes P (7) too. The initial states
# (LSTM's h 5 and c 6, GRU's and RNN's h 5) are state, not weights, even when constant.
declare_traits(OpTraits(weight_inputs=(1, 2, 3, 7), state_inputs=(5, 6), kernel="gemm"), "LSTM")
declare_traits(OpTraits(weight_inputs=(1, 2, 3), state_inputs=(5,), kernel="gemm"), "GRU", "RNN")
QUANTIZED_LSTM = "com.microsoft::DynamicQuantizeLSTM"
# ... and the quantized LSTM's scales and zero points of W and R (8-11).
declare_traits(OpTraits(weight_inputs=(1, 2, 3, 7, 8, 9, 10, 11), state_inputs=(5, 6), kernel="gemm"),
               QUANTIZED_LSTM)


def _int(d: Dim, what: str) -> int:
    if not isinstance(d, int):
        raise ValueError(f"{what} {d!r} is not known")
    return d


def _op(node: Node) -> str:
    """The float layer a node computes (the quantized LSTM is an LSTM)."""
    return "LSTM" if node.op == "DynamicQuantizeLSTM" else node.op


def _activation_flops(node: Node) -> int:
    """FLOPs per hidden unit and step of one direction's activations (f, g[, h])."""
    given = node.attr("activations")
    names = [a.decode() if isinstance(a, bytes) else str(a) for a in given] if isinstance(given, (list, tuple)) else []
    op = _op(node)
    per_direction = len(DEFAULT_ACTIVATIONS[op])
    names = names[:per_direction] or list(DEFAULT_ACTIVATIONS[op])
    f, *rest = names
    # f is the gates' activation: LSTM has three sigmoid gates (i, o, f), GRU two (z, r).
    return SIGMOID_GATES[op] * _cost(f) + sum(_cost(n) for n in rest)


def _cost(activation: str) -> int:
    return UNARY_COST.get(activation, OTHER_ACTIVATION_COST.get(activation, 8))


@infer(QUANTIZED_LSTM)
def _quantized_lstm(node: Node) -> list[TensorType | None]:
    """Y [seq, directions, batch, hidden], Y_h and Y_c [directions, batch, hidden], as LSTM's
    (onnx has no schema of onnxruntime's contrib op to infer them from)."""
    x, w = in_type(node, 0), in_type(node, 1)
    if x.shape is None or w.shape is None or len(x.shape) != 3 or len(w.shape) != 3:
        return [TensorType(x.dtype, None) for _ in node.outputs]
    seq, batch = x.shape[0], x.shape[1]
    directions = w.shape[0]
    hidden: Dim = node.attr_int("hidden_size", 0) or (w.shape[2] // 4 if isinstance(w.shape[2], int) else None)
    state = TensorType(x.dtype, (directions, batch, hidden))
    types: list[TensorType | None] = [TensorType(x.dtype, (seq, directions, batch, hidden)), state, state]
    return types[: len(node.outputs)]


@work("LSTM", "GRU", "RNN", QUANTIZED_LSTM)
def _recurrent_work(node: Node) -> Work:
    x, w = in_type(node, 0), in_type(node, 1)
    if x.shape is None or w.shape is None or len(x.shape) != 3 or len(w.shape) != 3:
        raise ValueError("input or weight rank unknown")
    op = _op(node)
    seq, batch = (x.shape[1], x.shape[0]) if node.attr_int("layout", 0) else (x.shape[0], x.shape[1])
    steps = _int(seq, "sequence length") * _int(batch, "batch")
    directions = _int(w.shape[0], "directions")
    gates = GATES[op]
    rows, inputs_dim = (w.shape[2], w.shape[1]) if op != node.op else (w.shape[1], w.shape[2])  # W stored transposed
    hidden = node.attr_int("hidden_size", 0) or _int(rows, "W rows") // gates
    inputs = _int(inputs_dim, "input size")
    units = steps * directions * hidden  # hidden units updated, over all steps and directions
    macs = units * gates * (inputs + hidden)
    if op == "LSTM" and node.input(7) is not None:
        macs += units * 3  # peepholes: p⊙c for the i, f and o gates
    bias = 2 * gates if node.input(3) is not None else 0  # W's bias and R's bias per gate
    flops = 2 * macs + units * (bias + STATE_FLOPS[op] + _activation_flops(node))
    return Work(macs=macs, flops=flops)
