"""LSTM, GRU and RNN in onnx's own node tests (both layouts, both directions, peepholes, absent
outputs, sequence lengths): every one is priced and its MACs match a count made from the test's
input arrays."""

from __future__ import annotations

import numpy as np

from hwnas.frontends.onnx import import_onnx
from hwnas.ir.registry import kernel_kind, op_counts, registered_ops

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _macs_from_arrays(op: str, node, inputs: list[np.ndarray]) -> int:  # noqa: ANN001
    x, w, r = inputs[:3]
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    seq, batch = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
    directions, rows, inputs_size = w.shape
    hidden = r.shape[2]
    assert rows == GATES[op] * hidden
    macs = seq * batch * directions * rows * (inputs_size + hidden)
    if op == "LSTM" and len(node.input) > 7 and node.input[7]:
        macs += seq * batch * directions * 3 * hidden  # peepholes
    return macs


def test_every_recurrent_node_test_is_priced_with_the_right_macs(node_cases: tuple) -> None:
    assert {"LSTM", "GRU", "RNN"} <= registered_ops()
    seen = set()
    for case in node_cases:
        ops = [n for n in case.model.graph.node if n.op_type in GATES]
        if not ops:
            continue
        (proto,) = ops
        graph = import_onnx(case.model)
        (node,) = [n for n in graph.nodes if n.op == proto.op_type]
        counts = op_counts(node)
        assert counts is not None, case.name
        inputs, _ = case.data_sets[0]
        assert counts.macs == _macs_from_arrays(proto.op_type, proto, inputs), case.name
        assert counts.flops > 2 * counts.macs, case.name  # the gates' element-wise math on top
        assert kernel_kind(node) == "gemm"
        seen.add(case.name)
    # Defaults, both directions, peepholes and the batch-first layout are among them.
    assert {"test_lstm_defaults", "test_lstm_bidirectional", "test_lstm_with_peepholes", "test_lstm_batchwise",
            "test_gru_defaults", "test_gru_bidirectional", "test_simple_rnn_defaults"} <= seen, sorted(seen)
    assert len(seen) == 18
