"""PyTorch frontend: an nn.Module and example inputs in, an `ir.Graph` out.

Route: torch's TorchScript-based ONNX exporter (`torch.onnx.export(..., dynamo=False)`),
then the ONNX frontend. It ships with torch (no onnxscript), produces the ONNX op set the
IR is built on (so every pass and cost model sees the same ops whichever way a model came
in), and keeps parameter names as constant names.

The module is traced in eval mode and handed back in the modes it came in, with its
buffers untouched (a fresh module is in train mode: tracing it as it is would update its
BatchNorm statistics and freeze train-mode behaviour into the graph). Each parameter stays
its own constant: the exporter would merge parameters whose values happen to be equal
(the layers of a fresh `nn.TransformerEncoder` are copies of one another), which would tie
layers that training and compression treat apart. The tracer's warnings about Python
control flow in the module's own code are passed on: they mean the graph holds one branch.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence

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
    """Export `module` (traced in eval mode, weights folded in as constants, one per parameter)
    to an ONNX model; the module is left as it was."""
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    names_in = list(input_names or [f"input{i}" if len(args) > 1 else "input" for i in range(len(args))])
    buf = io.BytesIO()
    try:
        with _eval_mode(module), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.no_grad():
                probe = module(*args)
            n_out = len(probe) if isinstance(probe, (tuple, list)) else 1
            names_out = list(output_names or [f"output{i}" if n_out > 1 else "output" for i in range(n_out)])
            axes = {n: {0: "batch"} for n in names_in + names_out} if dynamic_batch else None
            # The stub types `f` as a path; the TorchScript exporter (dynamo=False) also writes to a BytesIO.
            # keep_initializers_as_inputs keeps parameters with equal values apart (it skips the
            # exporter's deduplication); the initializers are taken out of the inputs below.
            torch.onnx.export(
                module, args, buf,  # type: ignore[arg-type]
                dynamo=False, opset_version=opset, input_names=names_in, output_names=names_out,
                dynamic_axes=axes, do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
                keep_initializers_as_inputs=True,
            )
    except Exception as e:  # the exporter raises many types; all mean "cannot lower this module"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(f"{type(module).__name__}: torch ONNX export failed: {first}") from None
    _pass_on(caught)
    model = onnx.load_from_string(buf.getvalue())
    constants = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in constants]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """The module in eval mode, then each submodule back in the mode it had."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


_TORCH_DIR = os.path.dirname(torch.__file__)


def _pass_on(caught: list[warnings.WarningMessage]) -> None:
    """Re-issue the warnings raised in the module's own code (the tracer's TracerWarning on
    Python control flow above all). Those raised inside torch are its exporter's notes on
    itself and the tracer's on torch's own shape checks: not the user's to act on."""
    for w in caught:
        if not w.filename.startswith(_TORCH_DIR) and not issubclass(w.category, DeprecationWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


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
