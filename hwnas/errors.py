"""Errors a person can act on; the CLI prints them as one line and exits with 2."""

from __future__ import annotations


class HwnasError(Exception):
    """Base of every error hwnas reports to a user."""


class ModelLoadError(HwnasError):
    """The model file is missing, unreadable, corrupt or malformed."""


class UnsupportedModelError(HwnasError):
    """The model is valid but uses something hwnas does not handle (yet)."""


class PipelineError(HwnasError):
    """A pipeline spec names an unknown pass or a wrong option."""


class OutputError(HwnasError):
    """An output path cannot be written."""


class TargetError(HwnasError):
    """A target name is unknown, or a target file is missing a field or has a wrong one."""


class CostError(HwnasError):
    """A model cannot be priced on a target (beyond listing its unpriced ops)."""


class MeasureError(HwnasError):
    """A model cannot be measured: the runtime refuses it, or the device or option is wrong."""


class DataError(HwnasError):
    """A data file (calibration or training samples) is missing, malformed or of the wrong shape."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message, at most 300 characters: runtimes
    and onnx raise many-line C++ traces, and hwnas reports one line."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(e).__name__
