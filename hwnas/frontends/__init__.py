"""Frontends: ONNX files and PyTorch modules in, `ir.Graph` out."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hwnas.errors import ModelLoadError
from hwnas.ir.dims import Sizes
from hwnas.ir.graph import Graph


def load_graph(path: str | os.PathLike, dims: Sizes | None = None) -> Graph:
    """Load a model by path: an ONNX file, or hwnas's own text (.hwnas) or JSON (.json) dump.
    `dims` choose the branch of an ONNX `If` that the input dims decide (`import_onnx`)."""
    p = Path(path)
    if p.suffix == ".json":
        from hwnas.ir.serialize import load_json

        return _guarded(p, load_json)
    if p.suffix in (".hwnas", ".txt"):
        from hwnas.ir.text import parse_graph

        return _guarded(p, lambda q: parse_graph(q.read_text()))
    from hwnas.frontends.onnx import import_onnx

    return import_onnx(p, dims=dims)


def _guarded(p: Path, load: Callable[[Path], Graph]) -> Graph:
    from hwnas.ir.graph import IRError

    if not p.is_file():
        raise ModelLoadError(f"{p}: no such file")
    try:
        return load(p)
    except (IRError, ValueError, KeyError, OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{p}: {e}") from None
