"""The C backend on a Cortex-M7 against the MCU cost model: flash and SRAM measured vs
estimated, the memory plan against naive ones, instructions vs estimated cycles, outputs on
QEMU vs onnxruntime.

    .venv/bin/python tools/bench/mcu.py [--images 20] [--quick] [--out DIR]

Models: the MNIST CNN and the digits CNN (the compression subjects, quantized to int8 on 64
training images), MobileNetV2-like nets from the search space at widths 0.35, 0.5 and 1.0
(144 px, 10 classes, random weights, quantized on 16 random inputs), and the MCU-sized
networks of the search spaces: three NAS-Bench-201 cells (16 channels, 32 px; conv and skip
edges only: the C backend has no int8 kernel for the `none` edge's multiply by zero, and the
quantizer gives `avg_pool_3x3`'s output no grid; the head's BatchNorm after the last Add
becomes the depthwise 1x1 Conv it is) and the first three MobileNetV2-space samples
(seeded, width <= 0.5, resolution <= 128) whose int8 form fits the cortex-m7 target, all with
random weights and calibration. Each is compiled by `hwnas.codegen.generate_c`, built with
host gcc (-std=c99 -Wall -Wextra -Werror) and with arm-none-eabi-gcc -mcpu=cortex-m7 -mthumb
-O2, and run on the host and under `qemu-system-arm -M mps2-an500 -icount shift=0` on
`--images` test inputs.

- arena: the plan's static arena; peak: the cost model's activation SRAM (the same order);
  given order: the peak of the graph's own topological order (liveness reuse, in place,
  perfect packing); naive: that order without in-place writes; sum: every activation
  tensor (views aside) at its stored width, no reuse. Ratios are against the arena.
- flash: text + rodata of model.o and the kernels (arm-none-eabi-size) vs the cost model's
  flash (weights + code estimate); code: .text only, the code beyond the weights.
- instructions: QEMU's instruction count of one inference (SysTick at 40 instructions a
  tick under -icount shift=0) beside the cost model's cycles, as a ratio, not as cycles.
- outputs: QEMU's int8 outputs vs onnxruntime's QDQ run on the same grid (values that
  differ, largest difference) and top-1 accuracy of both on the subjects' labels; the host
  build's outputs vs QEMU's (the same C on two instruction sets); and the same on QEMU with
  `requantize="onnxruntime"` (layers rescaled by onnxruntime's float32 scales instead of
  the Q31 multiplier and shift), with its instruction count.
Results: tools/bench/results/mcu.json and mcu.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from common import environment, parser, write_json, write_markdown
from rich.console import Console
from rich.table import Table

from hwnas.backends.cost.liveness import peak_memory
from hwnas.backends.cost.mcu import estimate, schedule, tensor_storage
from hwnas.backends.target import load_target
from hwnas.codegen import generate_c
from hwnas.codegen.c.harness import HostModel, arm_toolchain_missing, build_cortex_m7, build_host_library, run_qemu
from hwnas.ir.attributes import Attr
from hwnas.ir.graph import Graph, Value
from hwnas.ir.registry import traits
from hwnas.passes.bind_dims import bound_copy
from hwnas.passes.fold_constants import FoldConstants
from hwnas.passes.quantize import prepare_layers, quantize_layers
from hwnas.search.spaces.mobilenetv2 import MBConfig, build_ir, sample
from hwnas.search.spaces.nasbench201 import build_ir as nb201_ir
from hwnas.tasks.evaluate import run_model
from hwnas.tasks.registry import load_task

QUICK_MODELS, QUICK_IMAGES, QUICK_RESOLUTION = ("mbv2-0.35",), 1, 32
NB201_CELLS = {  # conv and skip edges (see the docstring)
    "nb201-best": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "nb201-mixed": "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "nb201-1x1": "|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|nor_conv_1x1~2|",
}
"""The cell the NAS-Bench-201 paper reports best on CIFAR-10, a mixed one, and a cheap 1x1 one."""
SAMPLES = 3
"""MobileNetV2-space samples that fit the cortex-m7 target."""
Loaded = tuple[Graph, np.ndarray, np.ndarray | None, np.ndarray]
"""(quantized graph, test inputs, labels or None, calibration inputs)."""


def quantize(graph: Graph, calib: np.ndarray) -> Graph:
    """Every layer to int8 on `calib` (folded constants first, as compile does)."""
    graph = FoldConstants().run(graph).graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes, _ = prepare_layers(graph, "quantize")
        quantize_layers(graph, {n.name: (8, 8) for n in nodes}, calib={graph.inputs[0].name: calib})
    return graph


def subject(name: str, images: int) -> Loaded:
    """(quantized graph, test inputs, labels, calibration inputs) of a compression subject."""
    task = load_task(name)
    calib = task.train[0][:64]
    return quantize(task.graph, calib), task.test[0][:images], task.test[1][:images], calib


def mobilenet(width: float, images: int, resolution: int) -> tuple[Graph, np.ndarray, None, np.ndarray]:
    """A MobileNetV2-like net (random weights) quantized on random inputs."""
    rng = np.random.default_rng(0)
    graph = build_ir(MBConfig(width=width, resolution=resolution, num_classes=10), seed=0)
    calib = rng.normal(size=(16, 3, resolution, resolution)).astype(np.float32)
    x = rng.normal(size=(images, 3, resolution, resolution)).astype(np.float32)
    return quantize(graph, calib), x, None, calib


def nb201(arch: str, images: int) -> tuple[Graph, np.ndarray, None, np.ndarray]:
    """A NAS-Bench-201 network of the cell (random weights) quantized on random inputs."""
    rng = np.random.default_rng(0)
    graph = batchnorm_as_conv(nb201_ir(arch, seed=0))
    calib = rng.normal(size=(16, 3, 32, 32)).astype(np.float32)
    x = rng.normal(size=(images, 3, 32, 32)).astype(np.float32)
    return quantize(graph, calib), x, None, calib


def batchnorm_as_conv(graph: Graph) -> Graph:
    """Each BatchNormalization (the NAS-Bench-201 head's, after an Add: no Conv to fold into)
    replaced by the depthwise 1x1 Conv it is: weight gamma / sqrt(var + eps), bias
    beta - mean * that; quantize then makes it an int8 layer with its ReLU fused."""
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        x, *params = (bn.operand(i) for i in range(5))
        gamma, beta, mean, var = (const(bn.name, v) for v in params)
        scale = (gamma / np.sqrt(var + bn.attr_float("epsilon", 1e-5))).astype(np.float32)
        c = len(scale)
        weight = graph.add_constant(scale.reshape(c, 1, 1, 1), f"{bn.name}_weight")
        bias = graph.add_constant((beta - mean * scale).astype(np.float32), f"{bn.name}_bias")
        conv = graph.add_node("Conv", [x, weight, bias], name=f"{bn.name}_as_conv", before=bn,
                              output_types=[bn.outputs[0].type],
                              attrs={"group": Attr.int(c), "kernel_shape": Attr.ints([1, 1])})
        bn.outputs[0].replace_all_uses_with(conv.outputs[0])
        graph.remove_node(bn)
        graph.drop_if_unused(*params)
    return graph


def const(node: str, v: Value) -> np.ndarray:
    """The array of constant operand `v` of `node` (a parameter this script needs folded)."""
    if v.const is None:
        raise ValueError(f"{node}: operand {v.name} is not a constant")
    return v.const


def mbv2_samples(images: int) -> dict[str, Callable[[], Loaded]]:
    """Loaders of the first SAMPLES seeded MobileNetV2-space samples with width <= 0.5 and
    resolution <= 128 whose int8 form fits the cortex-m7 target (flash and SRAM)."""
    rng, target = np.random.default_rng(2024), load_target("cortex-m7")
    found: dict[str, Callable[[], Loaded]] = {}
    while len(found) < SAMPLES:
        config = sample(rng, num_classes=10)
        if config.width > 0.5 or config.resolution > 128:
            continue
        loaded = sampled(config, images)
        if estimate(bound_copy(loaded[0]), target).fits:
            found[config.name] = partial(as_loaded, loaded)
    return found


def as_loaded(loaded: Loaded) -> Loaded:
    """What a loader of an already loaded model returns."""
    return loaded


def sampled(config: MBConfig, images: int) -> tuple[Graph, np.ndarray, None, np.ndarray]:
    """A MobileNetV2-space sample (random weights) quantized on random inputs."""
    rng = np.random.default_rng(0)
    r = config.resolution
    calib = rng.normal(size=(16, 3, r, r)).astype(np.float32)
    x = rng.normal(size=(images, 3, r, r)).astype(np.float32)
    return quantize(build_ir(config, seed=0), calib), x, None, calib


def measure(name: str, graph: Graph, x: np.ndarray, labels: np.ndarray | None, calib: np.ndarray) -> dict[str, object]:
    """One row: plan, flash, instructions and outputs of the model."""
    target = load_target("cortex-m7")
    t0 = time.perf_counter()
    project = generate_c(graph, calib={graph.inputs[0].name: calib})
    gen_s = time.perf_counter() - t0
    bound = bound_copy(graph)
    report = estimate(bound, target)
    sched = schedule(bound)
    storage = tensor_storage(bound)
    exact = generate_c(graph, calib={graph.inputs[0].name: calib}, requantize="onnxruntime")
    x_q = project.input.quantize(x)
    with tempfile.TemporaryDirectory() as tmp:
        host = HostModel(build_host_library(project, Path(tmp) / "host"), project).run(x_q)
        build = build_cortex_m7(project, Path(tmp) / "arm")
        run = run_qemu(build, project, x_q, timeout=1200)
        exact_run = run_qemu(build_cortex_m7(exact, Path(tmp) / "exact"), exact, x_q, timeout=1200)
    ref = project.output.quantize(run_model(graph, x, batch=16))
    diff = np.abs(run.outputs.astype(np.int32) - ref.astype(np.int32))
    exact_diff = np.abs(exact_run.outputs.astype(np.int32) - ref.astype(np.int32))
    cycles = sum(c.resources.get("cycles", 0.0) for c in report.nodes)
    arena, given = project.arena_bytes, sched.given_peak_bytes
    naive = peak_memory(bound, lambda _, v: storage[v].nbytes, in_place=False)
    every = sum(t.nbytes for v, t in storage.items() if v.producer is None or not traits(v.producer).view)
    row: dict[str, object] = {
        "model": name, "generate_s": gen_s,
        "arena_bytes": arena, "peak_bytes": report.extra["sram_activations_bytes"],
        "given_order_bytes": given, "sum_bytes": every, "naive_bytes": naive,
        "scratch_estimated_bytes": report.extra["sram_scratch_bytes"],
        "flash_measured_bytes": build.model_text, "flash_estimated_bytes": report.resources["flash"].used,
        "weight_bytes": project.weight_bytes, "weight_estimated_bytes": report.weight_bytes,
        "code_bytes": build.model_code, "code_estimated_bytes": report.extra["flash_code_bytes"],
        "instructions": run.first_instructions, "instructions_mean": run.mean_instructions,
        "cycles_estimated": cycles, "images": len(x),
        "values_differing": float((diff > 0).mean()), "max_difference": int(diff.max()),
        "same_class": float((run.outputs.argmax(1) == ref.argmax(1)).mean()),
        "host_equals_qemu": bool(np.array_equal(host, run.outputs)),
        "exact_values_differing": float((exact_diff > 0).mean()), "exact_max_difference": int(exact_diff.max()),
        "exact_instructions": exact_run.first_instructions,
        "arena_vs_given_order": given / arena, "arena_vs_naive": naive / arena, "arena_vs_sum": every / arena,
        "instructions_per_estimated_cycle": run.first_instructions / cycles if cycles else None,
    }
    if labels is not None:
        row["accuracy_qemu"] = float((run.outputs.argmax(1) == labels).mean())
        row["accuracy_onnxruntime"] = float((ref.argmax(1) == labels).mean())
    return row


def markdown(rows: list[dict[str, object]], doc: dict) -> str:
    """The results as Markdown tables."""
    lines = ["# C backend on a Cortex-M7 (QEMU mps2-an500) vs the MCU cost model\n",
             f"{doc['machine']['cpu']}, {doc['machine']['date']}; {'quick run' if doc['quick'] else 'full run'}.\n",
             "| model | arena B | cost-model peak B | given order B (×) | naive B (×) | sum B (×) | flash B (est.) "
             "| code B (est.) | instructions | est. cycles | instr./cycle | images | values differing "
             "| host = QEMU | accuracy QEMU / ORT | ORT requantization: differing, instructions |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = (f"{r['accuracy_qemu']:.1%} / {r['accuracy_onnxruntime']:.1%}" if "accuracy_qemu" in r else "n/a")
        lines.append(
            f"| {r['model']} | {r['arena_bytes']:,} | {r['peak_bytes']:,} | {r['given_order_bytes']:,} "
            f"({r['arena_vs_given_order']:.2f}×) | {r['naive_bytes']:,} ({r['arena_vs_naive']:.2f}×) "
            f"| {r['sum_bytes']:,} ({r['arena_vs_sum']:.2f}×) "
            f"| {r['flash_measured_bytes']:,} ({r['flash_estimated_bytes']:,.0f}) "
            f"| {r['code_bytes']:,} ({r['code_estimated_bytes']:,.0f}) | {r['instructions']:,} "
            f"| {r['cycles_estimated']:,.0f} | {r['instructions_per_estimated_cycle']:.2f} | {r['images']} "
            f"| {r['values_differing']:.2%} (max {r['max_difference']}) "
            f"| {'yes' if r['host_equals_qemu'] else 'no'} | {acc} "
            f"| {r['exact_values_differing']:.2%} (max {r['exact_max_difference']}), {r['exact_instructions']:,} |")
    lines.append("\nArena = the plan's static arena (equal to the cost model's activation peak when packing "
                 "reaches it); the kernels use no scratch, the cost model adds CMSIS-NN's im2col scratch to its "
                 "SRAM figure. Instruction counts are QEMU's, not cycles. host = QEMU: the host gcc build "
                 "gives QEMU's outputs on every input. Values differing: the fixed-point (CMSIS-NN and TFLite) "
                 "requantization of layers, Add and average pools rounds a rare value apart from onnxruntime's "
                 "float32 one, and in the random-weight NAS-Bench-201 and MobileNetV2-like nets the difference "
                 "spreads through the untrained blocks that follow (the trained subjects' outputs are identical). "
                 "ORT requantization: the same model generated with requantize=onnxruntime, which rounds all of "
                 "them as onnxruntime's kernels do, in float32 (soft-float on this Cortex-M7 build).")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = parser(__doc__, "MobileNetV2-0.35 at 32 px, one input")
    ap.add_argument("--images", type=int, default=20, help="test inputs run under QEMU per model")
    args = ap.parse_args()
    missing = arm_toolchain_missing()
    if missing:
        print(f"mcu: the Arm toolchain is missing ({missing}); scripts/setup.sh installs it", file=sys.stderr)
        return 2
    images = QUICK_IMAGES if args.quick else args.images
    resolution = QUICK_RESOLUTION if args.quick else 144
    loaders: dict[str, Callable[[], Loaded]] = {
        "mnist-cnn": partial(subject, "mnist-cnn", images), "digits-cnn": partial(subject, "digits-cnn", images),
        **{f"mbv2-{w}": partial(mobilenet, w, images, resolution) for w in (0.35, 0.5, 1.0)},
        **{name: partial(nb201, arch, images) for name, arch in NB201_CELLS.items()}}
    if not args.quick:
        loaders.update(mbv2_samples(images))
    names = QUICK_MODELS if args.quick else tuple(loaders)
    rows: list[dict[str, object]] = []
    console = Console()
    for name in names:
        t0 = time.perf_counter()
        row = measure(name, *loaders[name]())
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        console.print(f"{name}: arena {row['arena_bytes']:,} B (peak {row['peak_bytes']:,}, given order "
                      f"{row['arena_vs_given_order']:.2f}×, naive {row['arena_vs_naive']:.2f}×, sum "
                      f"{row['arena_vs_sum']:.2f}×), flash "
                      f"{row['flash_measured_bytes']:,} B (est. {row['flash_estimated_bytes']:,.0f}), code "
                      f"{row['code_bytes']:,} B, {row['instructions']:,} instructions "
                      f"({row['instructions_per_estimated_cycle']:.2f}/est. cycle), {row['seconds']:.0f} s")
    doc = {"benchmark": "mcu", "quick": args.quick, "machine": environment(), "resolution": resolution,
           "rows": rows}
    write_json(args.out, "mcu", doc)
    write_markdown(args.out, "mcu", markdown(rows, doc))
    table = Table("model", "arena B", "×given", "×sum", "flash B", "code B", "instr./est. cycle", "differing")
    for r in rows:
        table.add_row(str(r["model"]), f"{r['arena_bytes']:,}", f"{r['arena_vs_given_order']:.2f}",
                      f"{r['arena_vs_sum']:.2f}", f"{r['flash_measured_bytes']:,}", f"{r['code_bytes']:,}",
                      f"{r['instructions_per_estimated_cycle']:.2f}", f"{r['values_differing']:.2%}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
