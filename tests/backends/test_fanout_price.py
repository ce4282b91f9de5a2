import re

from hwnas.backends.cost import estimate
from hwnas.backends.emit.qdq import to_qdq_onnx
from tests.backends.test_qdq_grids import _pooled_residual


def test_priced_is_emitted():
    g = _pooled_residual()
    from hwnas.passes.bind_dims import bound_copy
    r = estimate(bound_copy(g), "h100")
    priced = sum(int(m.group(1)) for c in r.nodes for m in [re.search(r"\+(\d+) Q/DQ kernels", c.note)] if m)
    emitted = [p.op_type for p in to_qdq_onnx(g).graph.node if p.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert priced == len(emitted), (priced, len(emitted), [(c.node, c.note[:60]) for c in r.nodes])
