"""PyTorch frontend: an nn.Module and example inputs in, an `ir.Graph` out.

Route: torch's TorchScript-based ONNX exporter (`torch.onnx.export(..., dynamo=False)`),
then the ONNX frontend. It ships with torch (no onnxscript), runs the module in eval mode,
produces the ONNX op set the IR is built on (so every pass and cost model sees the same
ops whichever way a model came in), and keeps parameter names as constant names.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import onnx
import torch

from hwnas.errors import UnsupportedModelError
from hwnas.frontends.onnx import MIN_OPSET, import_onnx
from hwnas.ir.graph import Graph


def export_onnx(
    module: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = False,
    opset: int = MIN_OPSET,
) -> onnx.ModelProto:
    """Export `module` (in eval mode, weights folded in as constants) to an ONNX model."""
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    names_in = list(input_names or [f"input{i}" if len(args) > 1 else "input" for i in range(len(args))])
    with torch.no_grad():
        probe = module(*args)
    n_out = len(probe) if isinstance(probe, (tuple, list)) else 1
    names_out = list(output_names or [f"output{i}" if n_out > 1 else "output" for i in range(n_out)])
    axes = {n: {0: "batch"} for n in names_in + names_out} if dynamic_batch else None
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The stub types `f` as a path; the TorchScript exporter (dynamo=False) also writes to a BytesIO.
            torch.onnx.export(
                module, args, buf,  # type: ignore[arg-type]
                dynamo=False, opset_version=opset, input_names=names_in, output_names=names_out,
                dynamic_axes=axes, do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
            )
    except Exception as e:  # the exporter raises many types; all mean "cannot lower this module"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(f"{type(module).__name__}: torch ONNX export failed: {first}") from None
    return onnx.load_from_string(buf.getvalue())


def import_torch(
    module: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = False,
    opset: int = MIN_OPSET,
) -> Graph:
    """Lower a PyTorch module to the IR, traced on `example_inputs`; the options are
    `export_onnx`'s. The graph is named after the module's class."""
    model = export_onnx(module, example_inputs, input_names=input_names, output_names=output_names,
                        dynamic_batch=dynamic_batch, opset=opset)
    graph = import_onnx(model)
    graph.name = type(module).__name__
    return graph
