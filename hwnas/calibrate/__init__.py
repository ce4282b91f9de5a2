"""Calibrated latency prediction (nn-Meter, Zhang et al., MobiSys 2021): measure single-kernel
models on this machine, fit one predictor per kernel group, and price whole models as the sum
of their kernels, with onnxruntime's fusions detected by rule (`fusion`). Float kernels, 8-bit
integer kernels as hwnas's `quantize` pass and QDQ emission make them (QLinearConv, QGemm,
QLinearAdd, with the Quantize/Dequantize/Transpose nodes where they meet float tensors), and
LSTM/GRU layers each have their own kernel groups. Whole networks of hwnas's search spaces,
profiled node by node (`networks`), teach each group how its kernels run inside a network
rather than alone.

    cal = calibrate("host-cpu")                 # or: hwnas calibrate --target host-cpu
    report = estimate(graph, "host-cpu", predictor=load_calibration("host-cpu"))

`refit_few_shot` adapts a calibration to a changed setting (another thread count) from a
handful of whole-model measurements.
"""

from __future__ import annotations

from hwnas.calibrate.fewshot import refit_few_shot
from hwnas.calibrate.predictor import Calibration, NetworkSample, Sample, Setting
from hwnas.calibrate.store import (
    CalibrationError,
    calibrate,
    calibration_path,
    check_calibratable,
    load_calibration,
    read_calibration,
    save_calibration,
)

__all__ = ["Calibration", "CalibrationError", "NetworkSample", "Sample", "Setting", "calibrate", "calibration_path",
           "check_calibratable", "load_calibration", "read_calibration", "refit_few_shot", "save_calibration"]
