"""`generate_c`: a quantized graph as a self-contained C99 project (model.c/model.h and the
int8 kernels), with one static arena laid out by the memory plan over the MCU cost model's
execution order."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from hwnas.backends.cost.mcu import schedule
from hwnas.codegen.c.grids import SOFTMAX_GRID, CodegenError, Grid, int8_zero_point, value_grids
from hwnas.codegen.c.lower import Lowering, Requantize, lower_node
from hwnas.codegen.c.plan import MemoryPlan, plan_memory
from hwnas.errors import OutputError
from hwnas.files import stage_file
from hwnas.ir.dims import Sizes
from hwnas.ir.graph import Graph, Value
from hwnas.passes.bind_dims import bound_copy
from hwnas.passes.fold_constants import FoldConstants

RUNTIME = ("hwnas_kernels.h", "hwnas_kernels.c")


@dataclass(frozen=True)
class TensorInfo:
    """The model's input or output as model_run sees it: int8 on a grid."""

    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    """int8 zero point (the QDQ model's uint8 one minus 128)."""

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float values as the int8 integers model_run takes (QuantizeLinear's rounding:
        x / scale in float32, to nearest even)."""
        q = np.rint(np.asarray(x, np.float32) / np.float32(self.scale)) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """int8 integers as the float values they stand for."""
        return ((np.asarray(q, np.int32) - self.zero_point) * np.float32(self.scale)).astype(np.float32)


@dataclass(frozen=True)
class CProject:
    """The generated C sources and the figures of the plan."""

    files: dict[str, str]
    input: TensorInfo
    output: TensorInfo
    arena_bytes: int
    """Size of the one static arena model_run uses (all activations)."""
    peak_bytes: int
    """The largest set of buffers live at one step of the order: the arena's lower bound."""
    weight_bytes: int
    """Flash of the weights (packed where 4 bits or fewer) and int32 biases."""
    order: list[str] = field(default_factory=list)
    """Node names in the order model_run runs them (the cost model's order)."""

    def write(self, folder: str | Path) -> list[Path]:
        """Write the files into `folder` (made if missing): every file is staged first and
        moved into place only when all are written, so an error leaves nothing half-done."""
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{folder}: cannot create the folder ({e.strerror or e})") from None
        staged: list[tuple[Path, Path]] = []
        try:
            for name, text in self.files.items():
                staged.append((stage_file(folder / name, text), folder / name))
            for tmp, path in staged:
                os.replace(tmp, path)
        except OSError as e:
            raise OutputError(f"{folder}: cannot write ({e.strerror or e})") from None
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
        return [path for _, path in staged]


def check_io(graph: Graph) -> None:
    """CodegenError unless GRAPH has one input and one output, as the C backend's entry point takes."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise CodegenError(f"graph '{graph.name}': the C backend takes one input and one output, not "
                           f"{len(graph.inputs)} and {len(graph.outputs)}")


def generate_c(graph: Graph, *, calib: Mapping[str, np.ndarray] | str | Path | None = None,
               output_grids: Mapping[str, Grid] | None = None, requantize: Requantize = "fixed",
               dims: Sizes | None = None) -> CProject:
    """The C project of a graph quantized to int8 (the `quantize` or `quantize-mixed` pass).

    Symbolic input dimensions are bound to their sizes in `dims`, the others to 1. A graph
    output left float (logits) needs a grid: from `output_grids` (value name -> (scale, uint8
    zero point)), a Softmax's 1/256, or the min/max of the QDQ model's outputs in onnxruntime
    on `calib` inputs (arrays by input name, or an .npz as the quantize pass reads it);
    otherwise a CodegenError. An op without a kernel, a tensor left float inside the graph or a shape
    that is not static is refused naming the node. `requantize` "fixed" gives layers a Q31
    multiplier and shift per channel (CMSIS-NN's) and Add, average pools and grid changes
    TFLite's integer schemes; "onnxruntime" rounds all of them as its CPU kernels do (float32
    scales; soft-float on an MCU without an FPU), so the outputs are bit-equal to
    onnxruntime's run of the QDQ model."""
    g = bound_copy(graph, sizes=dims)
    g = FoldConstants().run(graph.copy() if g is graph else g).graph  # Clip bounds, Reshape shapes
    check_io(g)
    if not any(n.ann.quant is not None for n in g.nodes):
        raise CodegenError(f"graph '{g.name}' is float: the C backend runs int8 (run quantize or quantize-mixed first)")
    x, y = g.inputs[0], g.outputs[0]
    given = dict(output_grids or {})
    if y.name not in given and y.producer is not None and y.producer.op == "Softmax":
        given[y.name] = SOFTMAX_GRID
    grids = value_grids(g, given)
    if y.name not in grids:
        if not calib:
            raise CodegenError(f"graph output '{y.name}' is float in the model: its int8 grid needs calibration "
                               "inputs (calib) or a given output grid")
        grids[y.name] = output_grid(g, calib)
    if x.name not in grids:
        raise CodegenError(f"graph input '{x.name}' is read by no 8-bit quantized node: quantize the model first")
    sched = schedule(g)
    for b in sched.buffers:
        for v in b.values:
            if v.type is None or (v.type.numel() or 0) > b.nbytes:
                raise CodegenError(f"tensor '{v.name}': the cost model gives it {b.nbytes} B, fewer than its int8 "
                                   "elements")
    plan = plan_memory(sched)
    low = Lowering(plan, grids, requantize)
    for n in plan.order:
        lower_node(low, n)
    inp, out = _info(x, grids), _info(y, grids)
    files = {"model.h": _header(inp, out, plan), "model.c": _source(low, plan, x, y, g.name)}
    runtime = resources.files("hwnas.codegen.c") / "runtime"
    files.update({name: (runtime / name).read_text() for name in RUNTIME})
    return CProject(files, inp, out, plan.arena_bytes, plan.peak_bytes, low.weight_bytes, [n.name for n in plan.order])


def output_grid(graph: Graph, calib: Mapping[str, np.ndarray] | str | Path) -> Grid:
    """The 8-bit grid covering the QDQ model's first output on `calib` (min/max)."""
    from hwnas.backends.emit import emit_onnx
    from hwnas.backends.emit.qdq import activation_qparams
    from hwnas.backends.sessions import session
    from hwnas.passes.quantize import load_calibration

    sess = session(emit_onnx(graph, check=False), source=f"model '{graph.name}'")
    name = sess.get_inputs()[0].name
    data = np.asarray(load_calibration(graph, calib if isinstance(calib, Mapping) else str(calib))[name], np.float32)
    outs = [sess.run(None, {name: data[i : i + 1]})[0] for i in range(len(data))]
    values = np.concatenate([o.reshape(-1) for o in outs])
    return activation_qparams(float(values.min()), float(values.max()), 8)


def _info(v: Value, grids: Mapping[str, Grid]) -> TensorInfo:
    grid = grids[v.name]
    shape = v.static_shape or ()
    return TensorInfo(v.name, tuple(shape), float(np.float32(grid[0])), int8_zero_point(grid))


def _header(inp: TensorInfo, out: TensorInfo, plan: MemoryPlan) -> str:
    return f"""/* Generated by hwnas: int8 inference in one static arena. */
#ifndef MODEL_H
#define MODEL_H

#include <stdint.h>

#define MODEL_INPUT_SIZE {int(np.prod(inp.shape))} /* {inp.name} {list(inp.shape)} */
#define MODEL_INPUT_SCALE {inp.scale!r}f
#define MODEL_INPUT_ZERO_POINT ({inp.zero_point})
#define MODEL_OUTPUT_SIZE {int(np.prod(out.shape))} /* {out.name} {list(out.shape)} */
#define MODEL_OUTPUT_SCALE {out.scale!r}f
#define MODEL_OUTPUT_ZERO_POINT ({out.zero_point})
#define MODEL_ARENA_SIZE {plan.arena_bytes}

/* Runs the model on one int8 input (real value = (q - zero point) * scale); returns 0. */
int model_run(const int8_t *in, int8_t *out);

#endif
"""


def _source(low: Lowering, plan: MemoryPlan, x: Value, y: Value, name: str) -> str:
    body = "\n".join(low.body)
    consts = "\n".join(low.consts)
    title = name.replace("*/", "* /")
    return f"""/* Generated by hwnas from graph '{title}': {len(plan.order)} steps, arena {plan.arena_bytes} B
   (peak of live buffers {plan.peak_bytes} B), weights and biases {low.weight_bytes} B. */
#include <string.h>

#include "hwnas_kernels.h"
#include "model.h"

static int8_t model_arena[MODEL_ARENA_SIZE > 0 ? MODEL_ARENA_SIZE : 1];

{consts}

int model_run(const int8_t *in, int8_t *out) {{
    memcpy(model_arena + {plan.offset(x)}, in, MODEL_INPUT_SIZE);
{body}
    memcpy(out, model_arena + {plan.offset(y)}, MODEL_OUTPUT_SIZE);
    return 0;
}}
"""
