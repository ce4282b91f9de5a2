"""The one place hwnas creates onnxruntime sessions: measurement, calibration runs of the
quantizer, constant folding, sensitivity and accuracy checks all take theirs from here, so
threads, optimization level and error messages mean the same thing everywhere.

Sessions run `threads` inside each op and none across ops, sequentially, so a figure for N
threads means the same thing on every model; onnxruntime's warnings (one per unused
initializer) are off.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort

from hwnas.errors import HwnasError, MeasureError, first_line

LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def session_options(*, threads: int = 1, optimization: str = "all", profile_prefix: str | None = None,
                    optimized_path: str | None = None, log_level: int = 4) -> ort.SessionOptions:
    """Options with `threads` inside each op, one across ops, sequential execution, the
    given optimization level (disable, basic, extended, all), and optionally profiling or
    the optimized model written to `optimized_path`."""
    if optimization not in LEVELS:
        raise MeasureError(f"unknown optimization level '{optimization}' (expected one of {', '.join(LEVELS)})")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = LEVELS[optimization]
    # 4, fatal only: ORT warns about every unused initializer, and an error it logs (a kernel's
    # bad input shape) also raises, which hwnas reports as its one line; logged, it came twice.
    so.log_severity_level = log_level
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    return so


def make_session(model: onnx.ModelProto | bytes, source: str, options: ort.SessionOptions, device: str = "cpu",
                 error: type[HwnasError] = MeasureError) -> ort.InferenceSession:
    """An InferenceSession on `device` with these options; a model onnxruntime refuses raises
    `error` with one line that names `source`."""
    if device not in PROVIDERS:
        raise MeasureError(f"unknown device '{device}' (expected one of {', '.join(PROVIDERS)})")
    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise MeasureError(f"{source}: onnxruntime has no {provider} here (available: "
                           f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu on a CUDA machine")
    providers = [provider] if device == "cpu" else [provider, "CPUExecutionProvider"]
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        sess = ort.InferenceSession(data, options, providers=providers)
    except Exception as e:  # ORT raises its own pybind exception types (Fail, InvalidGraph, ...)
        raise error(f"{source}: onnxruntime cannot load the model ({first_line(e)})") from None
    if sess.get_providers()[0] != provider:  # ORT falls back to CPU silently when CUDA fails to start
        raise MeasureError(f"{source}: onnxruntime could not start {provider} (running on {sess.get_providers()})")
    return sess


def session(model: onnx.ModelProto | bytes, *, threads: int = 1, optimization: str = "all", device: str = "cpu",
            source: str = "model", error: type[HwnasError] = MeasureError, log_level: int = 4) -> ort.InferenceSession:
    """`make_session` with `session_options(threads=..., optimization=..., log_level=...)`: the usual call."""
    options = session_options(threads=threads, optimization=optimization, log_level=log_level)
    return make_session(model, source, options, device, error)
