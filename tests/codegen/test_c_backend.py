"""The C backend against onnxruntime: the compression subjects (MNIST CNN, digits CNN) and a
MobileNetV2-like network quantized to int8, compiled by gcc and run on real test images,
then linked for a Cortex-M7 and run under QEMU."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.backends.cost.mcu import estimate
from hwnas.backends.target import load_target
from hwnas.codegen import CodegenError, CProject, generate_c
from hwnas.codegen.c.harness import HostModel, arm_toolchain_missing, build_cortex_m7, build_host_library, run_qemu
from hwnas.frontends.torch import import_torch
from hwnas.ir.graph import Graph
from hwnas.passes.bind_dims import bound_copy
from hwnas.passes.fold_constants import FoldConstants
from hwnas.passes.quantize import prepare_layers, quantize_layers
from hwnas.tasks.evaluate import run_model
from hwnas.tasks.registry import load_task

SUBJECTS = {"mnist-cnn": 120, "digits-cnn": 540}  # test images run on the host build
QEMU_IMAGES = {"mnist-cnn": 2, "digits-cnn": 12}


def quantized(graph: Graph, calib: np.ndarray, w_bits: int = 8) -> Graph:
    """The graph with every layer quantized (w_bits, 8-bit data) on `calib`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes, _ = prepare_layers(graph, "quantize")
        quantize_layers(graph, {n.name: (w_bits, 8) for n in nodes}, calib={graph.inputs[0].name: calib})
    return graph


@dataclass
class Subject:
    name: str
    graph: Graph
    project: CProject
    x: np.ndarray
    labels: np.ndarray


@pytest.fixture(scope="module", params=sorted(SUBJECTS))
def subject(request: pytest.FixtureRequest) -> Subject:
    task = load_task(request.param)
    calib = task.train[0][:64]
    graph = quantized(task.graph, calib)
    n = SUBJECTS[request.param]
    return Subject(request.param, graph, generate_c(graph, calib={task.input_name: calib}), task.test[0][:n],
                   task.test[1][:n])


def check_against_onnxruntime(graph: Graph, project: CProject, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Outputs at most 1 LSB from onnxruntime's (on the output grid) on at most 1% of values,
    and the same class for every sample; returns onnxruntime's int8 outputs."""
    ref = project.output.quantize(run_model(graph, x, batch=64))
    diff = np.abs(out.astype(np.int32) - ref.astype(np.int32))
    assert diff.max() <= 1, f"{(diff > 1).sum()} values more than 1 LSB apart"
    assert (diff > 0).mean() <= 0.01
    assert np.array_equal(out.argmax(axis=1), ref.argmax(axis=1))
    return ref


def test_host_build_matches_onnxruntime(subject: Subject, tmp_path: Path) -> None:
    lib = build_host_library(subject.project, tmp_path)
    out = HostModel(lib, subject.project).run(subject.project.input.quantize(subject.x))
    ref = check_against_onnxruntime(subject.graph, subject.project, subject.x, out)
    # accuracy on the labels: identical to onnxruntime's, and a working classifier
    assert (out.argmax(1) == subject.labels).mean() == (ref.argmax(1) == subject.labels).mean() > 0.9


def test_arena_is_the_cost_models_peak(subject: Subject) -> None:
    report = estimate(bound_copy(subject.graph), load_target("cortex-m7"))
    assert subject.project.arena_bytes == subject.project.peak_bytes == report.extra["sram_activations_bytes"]
    assert subject.project.order == report.order


@pytest.mark.skipif(arm_toolchain_missing() is not None, reason=f"Arm toolchain missing: {arm_toolchain_missing()}")
def test_cortex_m7_under_qemu(subject: Subject, tmp_path: Path) -> None:
    build = build_cortex_m7(subject.project, tmp_path)
    assert 0 < build.model_code < 16_000  # code beyond the weights (kernels and model_run)
    assert build.model_text >= subject.project.weight_bytes
    n = QEMU_IMAGES[subject.name]
    run = run_qemu(build, subject.project, subject.project.input.quantize(subject.x[:n]))
    check_against_onnxruntime(subject.graph, subject.project, subject.x[:n], run.outputs)
    macs = {"mnist-cnn": 4_241_152, "digits-cnn": 894_592}[subject.name]
    assert macs < run.first_instructions < 40 * macs  # at least one instruction per multiply-accumulate


def test_four_bit_weights_are_packed_and_exact() -> None:
    task = load_task("digits-cnn")
    calib = task.train[0][:64]
    eight = generate_c(quantized(task.graph.copy(), calib, 8), calib={"input": calib})
    four_graph = quantized(task.graph.copy(), calib, 4)
    four = generate_c(four_graph, calib={"input": calib})
    layers = [n for n in four_graph.nodes if n.ann.quant is not None and n.ann.quant.w_bits]
    sizes = [np.asarray(n.operand(1).const).size for n in layers]
    biases = sum(4 * np.asarray(n.operand(2).const).size for n in layers if n.input(2) is not None)
    assert eight.weight_bytes - biases == sum(sizes)
    assert four.weight_bytes - biases == sum((s + 1) // 2 for s in sizes)  # two weights a byte
    assert "packed = 1" in four.files["model.c"] and "packed = 1" not in eight.files["model.c"]


def test_four_bit_host_build_matches_onnxruntime(tmp_path: Path) -> None:
    task = load_task("digits-cnn")
    calib = task.train[0][:64]
    graph = quantized(task.graph.copy(), calib, 4)
    project = generate_c(graph, calib={"input": calib})
    x = task.test[0][:200]
    out = HostModel(build_host_library(project, tmp_path), project).run(project.input.quantize(x))
    check_against_onnxruntime(graph, project, x, out)


class Mixed(nn.Module):
    """Depthwise and pointwise convs, ReLU6, average pool, Concat, Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU())
        self.pw = nn.Conv2d(8, 8, 1)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        b = self.pool(self.pw(self.dw(a)))
        c = self.mp(a)
        return torch.softmax(self.fc(torch.cat([b, c], 1).flatten(1)), dim=-1)


def test_every_kernel_matches_onnxruntime(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    graph = import_torch(Mixed().eval(), torch.zeros(1, 3, 16, 16))
    x = rng.normal(size=(96, 3, 16, 16)).astype(np.float32)
    graph = quantized(graph, x[:64])
    project = generate_c(graph)
    ops = {n.op for n in graph.nodes}
    assert {"Conv", "Clip", "Relu", "AveragePool", "MaxPool", "Concat", "Softmax", "Gemm", "Flatten"} <= ops
    out = HostModel(build_host_library(project, tmp_path), project).run(project.input.quantize(x))
    check_against_onnxruntime(graph, project, x, out)


def test_mobilenetv2_like_arena_is_the_peak(tmp_path: Path) -> None:
    from hwnas.search.spaces.mobilenetv2 import MBConfig, build_ir

    # folded first: the builder's Clip bounds are Constant nodes, which the order search takes as
    # steps (each ready at the start), and the search then takes minutes
    graph = FoldConstants().run(build_ir(MBConfig(width=0.35, resolution=32, num_classes=10), seed=0)).graph
    x = np.random.default_rng(0).normal(size=(24, 3, 32, 32)).astype(np.float32)
    graph = quantized(graph, x[:16])
    project = generate_c(graph, calib={graph.inputs[0].name: x[:16]})
    assert project.arena_bytes == project.peak_bytes
    assert project.arena_bytes == estimate(bound_copy(graph), load_target("cortex-m7")).extra["sram_activations_bytes"]
    out = HostModel(build_host_library(project, tmp_path), project).run(project.input.quantize(x))
    check_against_onnxruntime(graph, project, x, out)


def test_unsupported_op_is_refused_naming_the_node() -> None:
    module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    graph = import_torch(module, torch.zeros(1, 1, 8, 8))
    x = np.random.default_rng(1).normal(size=(16, 1, 8, 8)).astype(np.float32)
    graph = quantized(graph, x)
    softplus = next(n for n in graph.nodes if n.op == "Softplus")
    with pytest.raises(CodegenError, match=rf"node '{softplus.name}' \(Softplus\): the C backend has no kernel"):
        generate_c(graph, calib={graph.inputs[0].name: x})


@pytest.fixture(scope="module")
def tabulated() -> tuple[Graph, CProject, np.ndarray]:
    """MobileNetV3's and LSTM-era activations between int8 layers."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Hardswish(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                           nn.Hardsigmoid(), nn.Conv2d(8, 8, 1), nn.Sigmoid(), nn.Conv2d(8, 4, 1), nn.Tanh(),
                           nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    x = np.random.default_rng(0).normal(size=(96, 3, 8, 8)).astype(np.float32)
    graph = quantized(import_torch(module, torch.zeros(1, 3, 8, 8)), x[:64])
    assert {"HardSwish", "HardSigmoid", "Sigmoid", "Tanh"} <= {n.op for n in graph.nodes}
    return graph, generate_c(graph, calib={graph.inputs[0].name: x[:64]}), x


def test_tabulated_activations_are_onnxruntimes(tabulated: tuple[Graph, CProject, np.ndarray],
                                               tmp_path: Path) -> None:
    """HardSwish, HardSigmoid, Sigmoid and Tanh run as 256-entry tables from grid to grid,
    computed as onnxruntime computes the QDQ form: on this model, its outputs exactly."""
    graph, project, x = tabulated
    out = HostModel(build_host_library(project, tmp_path), project).run(project.input.quantize(x))
    ref = check_against_onnxruntime(graph, project, x, out)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.skipif(arm_toolchain_missing() is not None, reason=f"Arm toolchain missing: {arm_toolchain_missing()}")
def test_tabulated_activations_under_qemu(tabulated: tuple[Graph, CProject, np.ndarray], tmp_path: Path) -> None:
    graph, project, x = tabulated
    run = run_qemu(build_cortex_m7(project, tmp_path), project, project.input.quantize(x[:4]))
    np.testing.assert_array_equal(run.outputs, check_against_onnxruntime(graph, project, x[:4], run.outputs))


def test_float_output_needs_calibration_and_float_model_is_refused() -> None:
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    graph = import_torch(module, torch.zeros(1, 1, 4, 4))
    with pytest.raises(CodegenError, match="is float: the C backend runs int8"):
        generate_c(graph.copy(), calib={graph.inputs[0].name: np.zeros((2, 1, 4, 4), np.float32)})
    x = np.random.default_rng(2).normal(size=(8, 1, 4, 4)).astype(np.float32)
    graph = quantized(graph, x)
    with pytest.raises(CodegenError, match="output '.*' is float in the model"):
        generate_c(graph)
    assert generate_c(graph, calib={graph.inputs[0].name: x}).output.shape == (1, 3)


def test_write_is_all_or_nothing(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Softmax(dim=-1)).eval()
    graph = import_torch(module, torch.zeros(1, 1, 4, 4))
    graph = quantized(graph, np.random.default_rng(3).normal(size=(8, 1, 4, 4)).astype(np.float32))
    project = generate_c(graph)
    written = project.write(tmp_path / "out")
    assert sorted(p.name for p in written) == ["hwnas_kernels.c", "hwnas_kernels.h", "model.c", "model.h"]
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "model.h").mkdir()  # a folder where a file must go: nothing may be written
    with pytest.raises(Exception, match="model.h"):
        project.write(blocked)
    assert sorted(p.name for p in blocked.iterdir()) == ["model.h"]


def test_plan_never_overlaps_live_buffers() -> None:
    from hwnas.backends.cost.mcu import schedule
    from hwnas.codegen.c.plan import plan_memory
    from hwnas.search.spaces.mobilenetv2 import MBConfig, build_ir

    graph = FoldConstants().run(build_ir(MBConfig(width=0.5, resolution=48, num_classes=10), seed=1)).graph
    sched = schedule(graph)
    plan = plan_memory(sched)
    spans = [(plan.offsets[b.values[0].name], b.nbytes, b.first, b.last) for b in sched.buffers]
    for i, (o1, s1, f1, l1) in enumerate(spans):
        for o2, s2, f2, l2 in spans[i + 1 :]:
            if f1 <= l2 and f2 <= l1:  # live at one step: disjoint bytes
                assert o1 + s1 <= o2 or o2 + s2 <= o1
    assert plan.arena_bytes == plan.peak_bytes == sched.peak_bytes


@pytest.mark.skipif(arm_toolchain_missing() is not None, reason=f"Arm toolchain missing: {arm_toolchain_missing()}")
def test_systick_counts_forty_instructions_a_tick(tmp_path: Path) -> None:
    """The instruction count's scale: a loop of 2,000,000 instructions reads 50,000 ticks."""
    import subprocess

    from hwnas.codegen.c import harness

    loop = ('#define MODEL_INPUT_SIZE 1\n#define MODEL_OUTPUT_SIZE 1\n'
            'static void model_run(const int8_t *a, int8_t *b) { unsigned n = 1000000; (void)a; (void)b;\n'
            '    __asm__ volatile("1: subs %0, %0, #1\\n bne 1b" : "+r"(n)); }')
    (tmp_path / "link.ld").write_text(harness.LINKER_SCRIPT)
    (tmp_path / "startup.c").write_text(harness.STARTUP)
    (tmp_path / "main.c").write_text(harness.MAIN.replace('#include "model.h"', loop))
    (tmp_path / "inputs.bin").write_bytes(b"\x01")
    subprocess.run(["arm-none-eabi-gcc", *harness.ARM_FLAGS, "-nostartfiles", "--specs=rdimon.specs", "-T", "link.ld",
                    "-o", "t.elf", "startup.c", "main.c"], cwd=tmp_path, check=True)
    out = subprocess.run(["qemu-system-arm", "-M", "mps2-an500", "-nographic", "-semihosting", "-icount", "shift=0",
                          "-kernel", "t.elf"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    ticks = int(out.stdout.split("first_ticks")[1].split()[0])
    assert abs(ticks * harness.NS_PER_TICK - 2_000_000) <= 2 * harness.NS_PER_TICK


def test_a_flattened_float_output(tmp_path: Path) -> None:
    """A conv's output flattened into the float graph output (whose grid comes from calibration)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                           nn.ReLU6(), nn.Conv2d(8, 8, 1), nn.Flatten()).eval()
    graph = import_torch(module, torch.zeros(1, 3, 8, 8))
    x = np.random.default_rng(4).normal(size=(32, 3, 8, 8)).astype(np.float32)
    graph = quantized(graph, x[:16])
    project = generate_c(graph, calib={graph.inputs[0].name: x[:16]})
    out = HostModel(build_host_library(project, tmp_path), project).run(project.input.quantize(x))
    check_against_onnxruntime(graph, project, x, out)


def test_packing_falls_back_to_the_exact_solver_where_greedy_fragments() -> None:
    from hwnas.codegen.c.plan import _place

    # found by search: every greedy order leaves a hole here (13 B), the exact placement needs the peak
    sizes, first, last = [2, 3, 4, 4, 3, 1], [1, 1, 2, 1, 0, 4], [1, 2, 2, 2, 1, 6]
    peak = max(sum(s for s, f, la in zip(sizes, first, last, strict=True) if f <= t <= la) for t in range(8))
    greedy = _place(sizes, first, last, peak, milp_seconds=0)
    exact = _place(sizes, first, last, peak, milp_seconds=5)
    assert peak == 12 and max(o + s for o, s in zip(greedy, sizes, strict=True)) == 13
    assert max(o + s for o, s in zip(exact, sizes, strict=True)) == 12
    for a in range(len(sizes)):
        for b in range(a + 1, len(sizes)):
            if first[a] <= last[b] and first[b] <= last[a]:
                assert exact[a] + sizes[a] <= exact[b] or exact[b] + sizes[b] <= exact[a]
