"""Compression study: accuracy, size and speed of pruning, quantization and both on real subjects.

    .venv/bin/python tools/bench/compression.py [--subjects mnist-cnn,digits-cnn,efficientnet-lite0] [--quick]
                                                [--seeds 0,1,2] [--out DIR]

For each subject (a task of `hwnas.tasks`) this builds, from its fp32 graph: uniform int8 PTQ
emitted as QDQ (onnxruntime's integer kernels) and, beside it, onnxruntime's own
`quantize_static` (QDQ, per-channel weights, the same calibration inputs: "ort-int8"); uniform
w4a4 PTQ and after a short QAT with distillation; mixed precision (weights of 2 to 8 bits, activations 8, Hessian-trace
sensitivities, exact MILP) at 0.25, 0.375 and 0.5 of the 8-bit weight size, each budget against
the greedy allocation and the uniform width of equal size (2, 3, 4 bits), PTQ and (digit
subjects) QAT; 30/50/70% channel pruning (l1, kept channels in multiples of 8) reached in 10%
steps, each fine-tuned with distillation; 50% pruning then int8 (PTQ, then QAT; and ort-int8). Every variant
gets its test accuracy (or top-1 agreement with fp32), output KL against fp32, weight bytes,
serialized ONNX bytes, params and MACs, onnxruntime latency at batch 1 and throughput at batch
32 (one thread, variants interleaved with fp32 so drift hits all alike; the speed-ups are ratios
within one run), and host-cpu / cortex-m7 predictions of `estimate`.

Everything runs once per seed (`--seeds`, 0,1,2 by default; 0,1 with --quick): the seed drives
the subject's own training where hwnas trains it (digits-cnn; mnist-cnn and EfficientNet-Lite0
are pretrained, so their seed varies fine-tuning and sampling only), the fine-tuning, and the
calibration and Hessian samples. Every accuracy is reported as mean ± std over the seeds with
its sample size n (test samples per seed); every speed-up as the median and interquartile range
of the per-round ratios of all seeds pooled. A second session of fp32 is timed in every group too:
fp32 against itself is the run's noise floor, and hwnas's int8 slower than onnxruntime's by no
more than that floor strays from 1x (its farther quartile) is reported as a tie, not a loss.

The protocol is fixed up front (the settings in SETTINGS); the aims are judged on the means:
(a) 50% pruning + int8 (after QAT) at most 1 point below fp32 and at least 2x fp32's batch-32
throughput; (b) mixed precision more accurate than the uniform width of equal size, at every
budget. Results: tools/bench/results/compression.{json,md,png}. `--quick` runs digits-cnn alone (unless
--subjects names others) with tiny settings (QUICK): every variant and step, in seconds.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import torch
from common import Phase, environment, parser, ratio, session, time_rounds, write_json, write_markdown
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from rich.console import Console
from rich.table import Table

from hwnas.backends.cost import estimate
from hwnas.backends.emit import emit_onnx, is_quantized
from hwnas.backends.emit.torch import to_torch
from hwnas.backends.target import load_target
from hwnas.calibrate import calibration_path, load_calibration
from hwnas.compress.finetune import FinetuneConfig, finetune, recalibrate_batchnorm
from hwnas.compress.loop import size
from hwnas.ir.graph import Graph
from hwnas.passes import PassRunner, parse_pipeline
from hwnas.passes.bind_dims import bound_copy
from hwnas.passes.channels import channel_groups
from hwnas.passes.prune_channels import prune_channels, ratios_toward
from hwnas.passes.quantize import quantizable, quantize_layers
from hwnas.passes.quantize_mixed import allocate, greedy, layer_costs
from hwnas.passes.sensitivity import sensitivities
from hwnas.tasks import Metric, Task, load_task
from hwnas.tasks.evaluate import kl_divergence, run_batches

SUBJECTS = ("mnist-cnn", "digits-cnn", "efficientnet-lite0")
QUICK_SUBJECTS = ("digits-cnn",)
TASK_KIND = {Metric.ACCURACY: "classify", Metric.AGREEMENT: "agree"}
"""The results' `task` field, named before tasks had metrics (kept so old and new results compare)."""
SEEDS = (0, 1, 2)
QUICK_SEEDS = (0, 1)
SEED_LOADER_OPTION = {"digits-cnn": "train_seed"}
"""The loader option a seed sets: a differently trained (and separately cached) model, on the same split."""
SEED_VARIES = {
    "digits-cnn": "the subject's own training (initial weights and batch order; each seed's model cached apart, "
                  "the train/test split fixed), the fine-tuning, and the calibration and Hessian samples",
    "mnist-cnn": "pretrained weights (ccexam), so the seed varies only the fine-tuning and the calibration and "
                 "Hessian samples (split fixed): PTQ rows vary with the calibration samples alone",
    "efficientnet-lite0": "pretrained weights (ImageNet), so the seed varies only the fine-tuning and the Hessian "
                          "samples: calibration uses all 40 training views, so its PTQ rows are the same every seed",
}
ORT_QUANTIZER = {"function": "onnxruntime.quantization.quantize_static", "quant_format": "QDQ", "per_channel": True,
                 "activation_type": "QInt8", "weight_type": "QInt8", "calibrate_method": "MinMax",
                 "calibration": "the same inputs as hwnas's int8, one batch"}
BUDGETS = (0.25, 0.375, 0.5)
EQUAL_WIDTH = {0.25: 2, 0.375: 3, 0.5: 4}
MIXED_BITS = (2, 3, 4, 5, 6, 8)
PRUNE_RATIOS = (0.3, 0.5, 0.7)
TARGETS = ("host-cpu", "cortex-m7")
# activation ranges and weight scales (MSE clipping loses EfficientNet's depthwise centre taps)
METHOD: Final = "minmax"
PRUNE_STEP = 0.1  # pruning reaches each ratio in steps of this, fine-tuning after each
MULTIPLE = 8  # kept channels round up to multiples of 8 (odd counts cost onnxruntime its blocked layouts)
INT_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger")
FLOAT_KERNELS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")
AIM_DROP = 0.01  # (a): at most one point of accuracy below fp32
AIM_SPEEDUP = 2.0  # (a): at least 2x fp32's measured batch-32 throughput
NOTES = (
    "int/float kernels: integer (QLinearConv, QGemm, ...) and float (Conv, FusedConv, Gemm, ...) kernels in "
    "onnxruntime's optimized graph.",
    "Weights narrower than 8 bits are stored as int8 on their grid (exact); with 8-bit activations onnxruntime runs "
    "them on its int8 kernels, so they are not faster than int8. Activations narrower than 8 bits are exact "
    "fake-quant (float ops): w4a4 rows are an accuracy simulation, their latency is not a deployment figure.",
    "`weights` counts each weight at its width, biases and other parameters at 4 bytes; `ONNX` is the file.",
    "EfficientNet-Lite0's 'accuracy' is top-1 agreement with the fp32 model (no ImageNet labels exist for "
    "scikit-image's photos) on n = 40 views: 4 photos x 10 views each, two of the photos not ImageNet content; one "
    "view is 2.5 points, and views of a photo are correlated, so the effective sample is nearer 4 than 40. Its 40 "
    "training views are too few to re-estimate BatchNorm statistics, so fine-tuning keeps them. digits-cnn's test "
    "split has n = 540 samples (one is 0.19 points), mnist-cnn's n = 2,500.",
    "mean ± std: over the seeds (sample std, ddof 1), n test samples each. Speed-ups: median [interquartile range] "
    "of the per-round ratios (fp32's round median over the variant's, side by side in one round) of all seeds "
    "pooled; 'rounds' in the JSON counts them.",
    "ort-int8 is onnxruntime's own quantize_static (QDQ, per-channel int8 weights, int8 activations, min-max "
    "calibration on the same inputs as hwnas's int8); it is timed in the same rounds as hwnas's int8, and "
    "'hwnas/ort' is hwnas-int8 throughput over ort-int8 throughput per round (below 1: hwnas is slower).",
)
console = Console(width=None if sys.stdout.isatty() else 200)  # logs keep whole table rows


@dataclass(frozen=True)
class Settings:
    """One subject's protocol. Fine-tuning always distils from fp32 (kd_alpha 0.5, T 4)."""

    calib: int  # training inputs for activation calibration
    hessian: int  # training inputs for the Hutchinson Hessian trace (16 Rademacher vectors)
    prune_epochs: float  # after each 10% pruning step
    prune_lr: float
    qat_epochs: float
    qat_lr: float
    batch: int
    qat_all: bool  # QAT for the int4, mixed and uniform variants too (not only pruning + int8)
    threads: int  # torch threads while training (1 keeps the digit subjects bit-reproducible)
    rounds: int  # latency rounds, variants interleaved in each
    reps_b1: int
    reps_b32: int
    group: int  # variants timed side by side (fp32 is in every group)
    fidelity: int  # test samples compared with the torch fake-quant emission
    loader: dict[str, Any] = field(default_factory=dict)
    mixed_every_seed: bool = True  # False: the mixed/greedy/uniform variants (and QAT of w4a4) on the first seed only


SETTINGS = {
    "mnist-cnn": Settings(256, 256, 2, 1e-3, 2, 1e-4, 64, True, 1, 15, 30, 8, 99, 64),
    "digits-cnn": Settings(256, 256, 3, 1e-3, 2, 1e-4, 64, True, 1, 15, 30, 8, 99, 64),
    # 40 training views: "epochs" of 5 steps; torch on both cores or fine-tuning would not fit the time budget.
    # Seeds past the first skip the mixed variants: with every calibration view used, only the 8 Hessian samples
    # would differ, and a 3-seed run must fit 25 minutes.
    "efficientnet-lite0": Settings(40, 8, 2, 1e-4, 1, 1e-4, 8, False, 2, 5, 5, 1, 7, 8, mixed_every_seed=False),
}
QUICK = {
    "mnist-cnn": Settings(32, 32, 0.1, 1e-3, 0.1, 1e-4, 64, True, 1, 2, 3, 1, 99, 16),
    "digits-cnn": Settings(32, 32, 0.1, 1e-3, 0.1, 1e-4, 64, True, 1, 2, 3, 1, 99, 16),
    "efficientnet-lite0": Settings(8, 2, 0.2, 1e-4, 0.2, 1e-4, 8, False, 2, 1, 2, 1, 99, 2, {"num_photos": 2}),
}


def say(msg: str, t0: float) -> None:
    """A progress line with the seconds since the study started."""
    console.print(f"[dim]{time.perf_counter() - t0:7.1f} s[/]  {msg}", highlight=False)


def canonical(graph: Graph) -> Graph:
    """BatchNorm folded, activations marked fused (the form cost models and deployment use)."""
    return PassRunner().run(parse_pipeline("canonicalize"), copy.deepcopy(graph)).graph


# -- variants ------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One compressed (or fp32) model of a subject: its graph, emitted ONNX and, once measured, its row of figures."""

    name: str
    family: str  # fp32, int8, int4, mixed, mixed-pert, greedy, uniform, prune, prune+int8
    stage: str  # "-" (fp32), ptq, qat, ft
    graph: Graph  # canonical IR, quantization annotations on it
    model: onnx.ModelProto
    emission: str  # onnx, qdq
    budget: float | None = None
    bits: dict[str, int] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    against: dict[str, Variant] = field(default_factory=dict)  # speed ratios to these, per round, when timed alongside
    external: bool = False  # built by onnxruntime's quantizer: `graph` is its float source


def emit(name: str, family: str, stage: str, graph: Graph, **kw: Any) -> Variant:
    """A variant with its graph emitted as QDQ ONNX when quantized, else as float ONNX."""
    model = emit_onnx(graph, check=False)
    return Variant(name, family, stage, graph, model, "qdq" if is_quantized(graph) else "onnx", **kw)


def quantized(graph: Graph, bits: dict[str, tuple[int, int]], calib: dict[str, np.ndarray], samples: int) -> Graph:
    """A copy of `graph` quantized per layer (w_bits, a_bits), min-max calibrated on `calib`."""
    g = copy.deepcopy(graph)
    quantize_layers(g, bits, method=METHOD, calib=calib, samples=samples)
    return g


class _Calibration(CalibrationDataReader):
    """onnxruntime's calibration reader over one array of inputs (one batch)."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.items = iter([{name: x}])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def ort_int8(source: Variant, name: str, family: str, calib: dict[str, np.ndarray], work: Path) -> Variant:
    """`source` (float ONNX) quantized by onnxruntime's own quantize_static (ORT_QUANTIZER) on `calib`."""
    src, dst = work / "ort_source.onnx", work / "ort_int8.onnx"
    onnx.save(source.model, str(src))
    (input_name, x), = calib.items()
    quantize_static(str(src), str(dst), _Calibration(input_name, x), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return Variant(name, family, "ptq", source.graph, onnx.load(str(dst)), "qdq", external=True,
                   info={"quantizer": "onnxruntime"})


def ort_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers with more than one element, scales and zero points of Q/DQ nodes left out."""
    qparams = {n.input[i] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for i in (1, 2) if len(n.input) > i}
    total = 0
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if init.name not in qparams and a.size > 1:
            total += a.nbytes
    return total


def uniform(graph: Graph, w_bits: int, a_bits: int) -> dict[str, tuple[int, int]]:
    """The same widths for every quantizable layer."""
    return {n.name: (w_bits, a_bits) for n in graph.nodes if quantizable(n)}


def weight_bytes(graph: Graph) -> int:
    """Σ weights × w_bits / 8 (32 when float), biases and other float parameters at 4 bytes."""
    seen: set[int] = set()
    total = 0.0
    for n in graph.nodes:
        q = n.ann.quant
        for i, v in enumerate(n.inputs):
            if v is None or v.const is None or v.const.dtype.kind != "f" or v.const.size <= 1 or id(v) in seen:
                continue
            seen.add(id(v))
            bits = q.w_bits if q is not None and q.w_bits and i == 1 else 32
            total += v.const.size * bits / 8
    return int(math.ceil(total))


# -- running ---------------------------------------------------------------------------------------


def evaluate(v: Variant, task: Task, settings: Settings, work: Path) -> None:
    """Accuracy (or agreement), KL vs the fp32 module, sizes, integer-kernel coverage in
    onnxruntime's optimized graph, and agreement with the torch fake-quant emission."""
    x = task.test[0]
    path = str(work / "optimized.onnx")
    sess = session(v.model, threads=os.cpu_count() or 1, optimized_path=path, source=v.name)
    ops = Counter(p.op_type for p in onnx.load(path).graph.node)
    got = run_batches(sess, x)
    params, macs = size(v.graph)
    row = {"accuracy": task.score(got, "test"),
           "kl": kl_divergence(task.reference_logits("test"), got),
           "weight_bytes": ort_weight_bytes(v.model) if v.external else weight_bytes(v.graph),
           "onnx_bytes": len(v.model.SerializeToString()),
           "params": int(params), "macs": int(macs),
           "int_kernels": sum(ops[k] for k in INT_KERNELS), "float_kernels": sum(ops[k] for k in FLOAT_KERNELS)}
    if v.emission == "qdq" and not v.external:
        k = min(settings.fidelity, len(x))
        with torch.no_grad():
            emulated = to_torch(v.graph)(torch.from_numpy(np.ascontiguousarray(x[:k]))).numpy()
        row["fidelity_top1"] = float((emulated.argmax(1) == got[:k].argmax(1)).mean())
        row["fidelity_max_abs"] = float(np.abs(emulated - got[:k]).max())
    v.row.update(row)


def predict_costs(v: Variant, predictors: dict[str, Any]) -> None:
    """The host-cpu and cortex-m7 estimates of a variant (batch bound to 1), into its row (none for
    onnxruntime's quantizer's variants: their graph is the float source)."""
    if v.external:
        return
    bound = bound_copy(v.graph)
    for t in TARGETS:
        r = estimate(bound, t, predictors.get(t))
        v.row[f"pred_{t}_latency_s"] = r.latency_s
        v.row[f"pred_{t}_energy_j"] = r.energy_j
        v.row[f"pred_{t}_weight_bytes"] = r.weight_bytes
        v.row[f"pred_{t}_fits"] = r.fits
        if r.unpriced:
            v.row[f"pred_{t}_unpriced"] = dict(r.unpriced)


def timing_groups(variants: list[Variant], group: int) -> list[list[Variant]]:
    """Groups timed side by side, each led by fp32: first every variant with the variants it is
    compared `against` (int8 beside ort-int8; pruned+int8 beside pruned float and pruned+ort-int8),
    then the others `group - 1` at a time."""
    fp32, groups, placed = variants[0], [], {id(variants[0])}
    for v in variants[1:]:
        if v.against and id(v) not in placed:
            members = [v, *v.against.values()]
            # Variants compared against the same ones join this group (PTQ and QAT of pruned+int8).
            members += [w for w in variants if w.against and w is not v and set(map(id, w.against.values()))
                        & set(map(id, v.against.values()))]
            new = []
            for w in members:
                if id(w) not in placed:
                    placed.add(id(w))
                    new.append(w)
            groups.append([fp32, *new])
    rest = [v for v in variants if id(v) not in placed]
    step = max(1, group - 1)
    return groups + [[fp32, *rest[i : i + step]] for i in range(0, len(rest), step)]


def time_variants(variants: list[Variant], task: Task, s: Settings, t0: float) -> None:
    """Median batch-1 latency and batch-32 time of every variant on one thread. Variants run in
    groups that all include fp32 (`timing_groups`), interleaved round by round (order rotated each
    round); each speed-up is fp32's median over the variant's, both from the same group, with the
    per-round ratios beside it (pooled over seeds later), and the per-round ratios to the variants
    it is compared `against`."""
    x = task.test[0]
    x1, x32 = x[:1], np.concatenate([x] * math.ceil(32 / len(x)))[:32]
    fp32 = variants[0]
    for gi, group in enumerate(timing_groups(variants, s.group)):
        # A second session of fp32, last in every group: fp32 against itself is the noise floor.
        sessions = [session(v.model, threads=1, source=v.name) for v in [*group, fp32]]
        name = sessions[0].get_inputs()[0].name
        # Warm-up: three batch-1 runs and one batch-32 run each, then rounds of both.
        phases = {"b1": Phase([partial(sess.run, None, {name: x1}) for sess in sessions], s.reps_b1, warmup=3),
                  "b32": Phase([partial(sess.run, None, {name: x32}) for sess in sessions], s.reps_b32, warmup=1)}
        times = time_rounds(phases, s.rounds)
        del sessions, phases
        per = len(group)
        for key in ("b1", "b32"):
            base = times[key][0]
            rounds = {id(v): np.median(times[key][i], axis=1) for i, v in enumerate(group)}
            again = np.median(times[key][len(group)], axis=1)
            fp32.row.setdefault(f"noise_{key}_per_round", []).extend((rounds[id(fp32)] / again).tolist())
            for i, v in enumerate(group):
                t = times[key][i]
                med = float(np.median(t))
                if v is fp32 and gi > 0:
                    v.row.setdefault(f"{key}_fp32_groups_s", []).append(med)
                    continue
                scale = 32 if key == "b32" else 1
                v.row.update({f"{key}_median_s": med / scale, f"{key}_p10_s": float(np.percentile(t, 10)) / scale,
                              f"{key}_p90_s": float(np.percentile(t, 90)) / scale,
                              **ratio(base, t).to_json(f"speedup_{key}"),
                              f"speedup_{key}_per_round": (rounds[id(fp32)] / rounds[id(v)]).tolist()})
                for comp, other in v.against.items():
                    if id(other) in rounds:
                        v.row[f"{comp}_{key}_per_round"] = (rounds[id(other)] / rounds[id(v)]).tolist()
        say(f"  timed {per - 1 if gi else per} variant(s) with fp32 alongside", t0)


# -- one subject ------------------------------------------------------------------------------------


def run_subject(name: str, s: Settings, seed: int, first: bool, predictors: dict[str, Any], work: Path,
                t0: float) -> dict[str, Any]:
    """Every variant of one subject built, evaluated, priced and timed with one seed, with the
    phases' seconds; `first` is the first seed (the only one with the mixed variants when
    `s.mixed_every_seed` is False)."""
    phases: dict[str, float] = {}
    caught: list[str] = []

    def phase(label: str, start: float) -> None:
        phases[label] = time.perf_counter() - start

    start = time.perf_counter()
    torch.manual_seed(seed)
    torch.set_num_threads(s.threads)  # torch inference too (fidelity, sensitivities): threads beyond this only contend
    option = SEED_LOADER_OPTION.get(name)
    task = load_task(name, **s.loader, **({option: seed} if option else {}))
    base = canonical(task.graph)
    train_x, train_y = task.train
    # Calibration and Hessian samples: the first of a seeded permutation of the training inputs.
    order = np.random.default_rng(seed).permutation(len(train_x))
    calib = {task.input_name: train_x[np.sort(order[: s.calib])]}
    teacher = task.reference_logits("train")
    phase("load_s", start)
    say(f"{name} seed {seed}: train {len(train_x)}, test {task.sample_size} ({task.metric})", t0)

    def tune(graph: Graph, epochs: float, lr: float) -> list[float]:
        cfg = FinetuneConfig(epochs=epochs, lr=lr, batch_size=s.batch, kd_alpha=0.5, temperature=4.0, seed=seed,
                             threads=s.threads)
        return finetune(graph, task.train, cfg, teacher_logits=teacher)

    variants: list[Variant] = []
    with warnings.catch_warnings(record=True) as caught_w:
        warnings.simplefilter("always")
        start = time.perf_counter()
        variants.append(emit("fp32", "fp32", "-", base))
        g8 = quantized(base, uniform(base, 8, 8), calib, s.calib)
        variants.append(emit("int8", "int8", "ptq", g8))
        variants.append(ort_int8(variants[0], "ort-int8", "ort-int8", calib, work))
        variants[1].against["vs_ort_int8"] = variants[2]
        g4 = quantized(base, uniform(base, 4, 4), calib, s.calib)
        variants.append(emit("w4a4", "int4", "ptq", g4))
        phase("ptq_s", start)
        say(f"{name}: int8 and w4a4 PTQ built", t0)

        start = time.perf_counter()
        nodes = [n for n in base.nodes if quantizable(n)]
        mixed = first or s.mixed_every_seed
        hx, hy = train_x[np.sort(order[: s.hessian])], train_y[np.sort(order[: s.hessian])]
        if mixed:
            sens = sensitivities(base, nodes, MIXED_BITS, hx, "hessian", hy, seed=seed, w_method=METHOD)
            costs = layer_costs(base, nodes, MIXED_BITS, "size")
            full8 = sum(costs[n.name][8] for n in nodes)
            mixed_sens = {k: {b: v[b] for b in MIXED_BITS} for k, v in sens.items()}
            mixed_costs = {k: {b: v[b] for b in MIXED_BITS} for k, v in costs.items()}
            # The other sensitivity the pass offers: the output change when one layer alone is quantized.
            pert = sensitivities(base, nodes, MIXED_BITS, hx[:64], "perturbation", seed=seed, w_method=METHOD)
            phase("sensitivity_s", start)
            say(f"{name}: Hessian sensitivities of {len(nodes)} layers on {len(hx)} inputs", t0)
            start = time.perf_counter()
            for budget in BUDGETS:
                w = EQUAL_WIDTH[budget]
                plans = {"mixed": allocate(mixed_sens, mixed_costs, budget * full8),
                         "mixed-pert": allocate(pert, mixed_costs, budget * full8),
                         "greedy": greedy(mixed_sens, mixed_costs, budget * full8)}
                for family, plan in plans.items():
                    g = quantized(base, {k: (b, 8) for k, b in plan.bits.items()}, calib, s.calib)
                    variants.append(emit(f"{family}@{budget:g}", family, "ptq", g, budget=budget,
                                         bits=dict(plan.bits),
                                         info={"sensitivity": plan.sensitivity, "cost_bytes": plan.cost,
                                               "budget_bytes": plan.budget}))
                g = quantized(base, uniform(base, w, 8), calib, s.calib)
                variants.append(emit(f"w{w}a8@{budget:g}", "uniform", "ptq", g, budget=budget,
                                     bits={n.name: w for n in nodes},
                                     info={"sensitivity": sum(sens[n.name][w] for n in nodes),
                                           "cost_bytes": sum(costs[n.name][w] for n in nodes),
                                           "budget_bytes": budget * full8}))
            phase("mixed_ptq_s", start)
            say(f"{name}: mixed, greedy and uniform at budgets {', '.join(f'{b:g}' for b in BUDGETS)} built", t0)

        start = time.perf_counter()
        qat_from = [v for v in variants if v.family in ("int4", "mixed", "mixed-pert", "greedy", "uniform")]
        if not s.qat_all:
            qat_from = [v for v in qat_from if v.family == "int4"]
        for v in qat_from:
            g = copy.deepcopy(v.graph)
            losses = tune(g, s.qat_epochs, s.qat_lr)
            variants.append(emit(v.name, v.family, "qat", g, budget=v.budget, bits=v.bits,
                                 info={**v.info, "losses": losses}))
        phase("qat_s", start)
        say(f"{name}: QAT of {len(qat_from)} variant(s)", t0)

        start = time.perf_counter()
        pruned50: Variant | None = None
        g, losses = copy.deepcopy(task.graph), []
        original = {grp.name: grp.channels for grp in channel_groups(g)}
        for k in range(1, round(max(PRUNE_RATIOS) / PRUNE_STEP) + 1):  # 10%, 20%, ...: seed 003's loop
            target = k * PRUNE_STEP
            prune_channels(g, ratios_toward(g, original, target), "l1", MULTIPLE)
            losses += tune(g, s.prune_epochs, s.prune_lr)
            if any(abs(target - r) < 1e-9 for r in PRUNE_RATIOS):
                variants.append(emit(f"prune{target:.0%}", "prune", "ft", canonical(g),
                                     info={"losses": list(losses)}))
                if abs(target - 0.5) < 1e-9:
                    pruned50 = variants[-1]
        phase("prune_s", start)
        say(f"{name}: pruned {', '.join(f'{r:.0%}' for r in PRUNE_RATIOS)} and fine-tuned", t0)

        start = time.perf_counter()
        assert pruned50 is not None
        p8 = quantized(pruned50.graph, uniform(pruned50.graph, 8, 8), calib, s.calib)
        variants.append(emit("prune50%+int8", "prune+int8", "ptq", p8))
        p8q = copy.deepcopy(p8)
        losses = tune(p8q, s.qat_epochs, s.qat_lr)
        variants.append(emit("prune50%+int8", "prune+int8", "qat", p8q, info={"losses": losses}))
        ort8 = ort_int8(pruned50, "prune50%+ort-int8", "prune+ort-int8", calib, work)
        for v in variants[-2:]:
            v.against.update(vs_pruned_float=pruned50, vs_ort_int8=ort8)
        variants.append(ort8)
        phase("prune_int8_s", start)

        start = time.perf_counter()
        for v in variants:
            evaluate(v, task, s, work)
            predict_costs(v, predictors)
        diagnostics = {}
        # What fine-tuning's first step (BatchNorm statistics from the training inputs) does on its own.
        recal = copy.deepcopy(task.graph)
        recalibrate_batchnorm(recal, train_x)
        # The same w4a8 PTQ with MSE instead of min-max ranges and scales: how much METHOD matters.
        mse = copy.deepcopy(base)
        quantize_layers(mse, uniform(base, 4, 8), method="mse", calib=calib, samples=s.calib)
        for key, graph in (("fp32_bn_recalibrated_on_train", canonical(recal)), ("w4a8_mse", mse)):
            d = emit(key, "diagnostic", "-", graph)
            evaluate(d, task, s, work)
            diagnostics[key] = {k: d.row[k] for k in ("accuracy", "kl")}
        phase("evaluate_s", start)
        say(f"{name}: evaluated {len(variants)} variants", t0)
        caught += sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}" for w in caught_w})

    start = time.perf_counter()
    time_variants(variants, task, s, t0)
    phase("latency_s", start)
    fp32_acc = variants[0].row["accuracy"]
    for v in variants:
        v.row["drop_points"] = (fp32_acc - v.row["accuracy"]) * 100
    return {"subject": name, "seed": seed, "task": TASK_KIND[task.metric], "train": len(train_x),
            "test": task.sample_size, "settings": asdict(s), "diagnostics": diagnostics, "phases_s": phases,
            "warnings": caught, "variants": [to_json(v) for v in variants]}


# -- seeds pooled ------------------------------------------------------------------------------------

SIZE_KEYS = ("weight_bytes", "onnx_bytes", "params", "macs", "int_kernels", "float_kernels", "b1_median_s",
             "b32_median_s", "pred_host-cpu_latency_s", "pred_host-cpu_energy_j", "pred_cortex-m7_latency_s",
             "pred_cortex-m7_energy_j")
"""Per-seed figures summarized by their median over seeds (sizes are the same every seed unless the allocation
differs)."""
COMPARISONS = ("vs_ort_int8", "vs_pruned_float")


def stat(values: list[float], n: int) -> dict[str, Any]:
    """Mean and sample std over seeds of a metric measured on `n` samples per seed."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": n,
            "seeds": int(a.size), "per_seed": a.tolist()}


def pooled(per_round: list[list[float]]) -> dict[str, Any]:
    """Median, interquartile range and extremes of per-round speed ratios, the rounds of all seeds pooled."""
    r = np.concatenate([np.asarray(x, dtype=float) for x in per_round])
    q25, q75 = np.percentile(r, [25, 75])
    return {"median": float(np.median(r)), "iqr": [float(q25), float(q75)], "range": [float(r.min()), float(r.max())],
            "rounds": int(r.size)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One subject's runs (one per seed) as one result: every accuracy as mean ± std with its n,
    every speed-up as pooled per-round ratios, the per-seed rows kept under `per_seed`."""
    first = runs[0]
    n = first["test"]
    k = min(first["settings"]["fidelity"], n)
    variants = []
    for lab in dict.fromkeys(r["label"] for run in runs for r in run["variants"]):
        pairs = [(run["seed"], r) for run in runs for r in run["variants"] if r["label"] == lab]
        rs = [r for _, r in pairs]
        head = rs[0]
        out: dict[str, Any] = {key: head[key] for key in ("name", "label", "family", "stage", "emission", "budget")}
        out["seeds"] = [seed for seed, _ in pairs]
        if head.get("quantizer"):
            out["quantizer"] = ORT_QUANTIZER
        for key in ("accuracy", "kl", "drop_points"):
            out[key] = stat([r[key] for r in rs], n)
        if "fidelity_top1" in head:
            out["fidelity_top1"] = stat([r["fidelity_top1"] for r in rs], k)
        for key in SIZE_KEYS:
            vals = [r.get(key) for r in rs]
            if all(isinstance(v, int | float) for v in vals):
                out[key] = vals[0] if len(set(vals)) == 1 else float(np.median(vals))
        for key in ("b1", "b32"):
            out[f"speedup_{key}"] = pooled([r[f"speedup_{key}_per_round"] for r in rs])
            if f"noise_{key}_per_round" in head:
                out[f"noise_{key}"] = pooled([r[f"noise_{key}_per_round"] for r in rs])
            for comp in COMPARISONS:
                if f"{comp}_{key}_per_round" in head:
                    out[f"{comp}_{key}"] = pooled([r[f"{comp}_{key}_per_round"] for r in rs])
        out["per_seed"] = rs
        variants.append(out)
    diagnostics = {key: {m: stat([run["diagnostics"][key][m] for run in runs], n) for m in ("accuracy", "kl")}
                   for key in first["diagnostics"]}
    return {**{key: first[key] for key in ("subject", "task", "train", "test", "settings")},
            "seeds": [run["seed"] for run in runs], "seed_varies": SEED_VARIES[first["subject"]],
            "diagnostics": diagnostics, "phases_s": {str(run["seed"]): run["phases_s"] for run in runs},
            "warnings": sorted({w for run in runs for w in run["warnings"]}), "variants": variants}


# -- aims, tables, plots ---------------------------------------------------------------------------


def same_allocation(x: dict[str, Any], u: dict[str, Any]) -> bool:
    """Whether the solver chose the uniform allocation itself, with every seed both ran."""
    return all(a["bits"] == b["bits"] for a, b in zip(x["per_seed"], u["per_seed"], strict=False))


def verdict_b(x: dict[str, Any], u: dict[str, Any]) -> str:
    """Aim (b)'s verdict of `x` against the uniform variant `u`, on the mean accuracies."""
    xa, ua = x["accuracy"]["mean"], u["accuracy"]["mean"]
    return ("PASS" if xa > ua else "TIE" if xa == ua else "MISS") + (" (same allocation)"
                                                                      if same_allocation(x, u) else "")


def speed_verdict(r: dict[str, Any], noise: dict[str, Any] | None) -> str:
    """hwnas against onnxruntime's quantizer from the per-round ratios `r` (hwnas's throughput
    over ort's): PASS at 1x or more; a TIE when below 1x by no more than fp32 timed against
    itself (`noise`, the run's noise floor) strays from 1x, either way, at its farther quartile
    (two sessions of one model differ by a few percent, not always centred on 1); else MISS."""
    if r["median"] >= 1.0:
        return "PASS"
    if noise is not None and r["median"] >= min(noise["iqr"][0], 1.0 / noise["iqr"][1]):
        return "TIE (within the noise floor)"
    return "MISS (hwnas slower)"


def aims(result: dict[str, Any]) -> dict[str, Any]:
    """Verdicts on the means over seeds: aim (a), 50% pruning + int8; aim (b), mixed against uniform
    at each budget; hwnas's int8 against onnxruntime's quantizer; int8 on the pruned model against
    the pruned float model."""
    by = {v["label"]: v for v in result["variants"]}
    out: dict[str, Any] = {"a": {}, "b": [], "ort": [], "int8_on_pruned": []}
    for stage, lab in (("qat", "prune50%+int8 qat"), ("ptq", "prune50%+int8")):
        v = by.get(lab)
        if v is None:
            continue
        drop, sp = v["drop_points"], v["speedup_b32"]
        ok_acc, ok_speed = drop["mean"] <= AIM_DROP * 100 + 1e-9, sp["median"] >= AIM_SPEEDUP
        out["a"][f"{stage}/qdq"] = {
            "drop_points": drop, "speedup_b32": sp, "speedup_b1": v["speedup_b1"],
            "vs_pruned_float_b32": v.get("vs_pruned_float_b32"), "vs_ort_int8_b32": v.get("vs_ort_int8_b32"),
            "accuracy_ok": ok_acc, "speed_ok": ok_speed, "speed_ok_b1": v["speedup_b1"]["median"] >= AIM_SPEEDUP,
            "verdict": "PASS" if ok_acc and ok_speed else "MISS"}
    for stage in ("ptq", "qat"):
        tail = " qat" if stage == "qat" else ""
        for budget in BUDGETS:
            m, u = by.get(f"mixed@{budget:g}{tail}"), by.get(f"w{EQUAL_WIDTH[budget]}a8@{budget:g}{tail}")
            g, p = by.get(f"greedy@{budget:g}{tail}"), by.get(f"mixed-pert@{budget:g}{tail}")
            if m is None or u is None:
                continue
            out["b"].append({"stage": stage, "budget": budget, "mixed": m["accuracy"], "uniform": u["accuracy"],
                             "greedy": g["accuracy"] if g else None,
                             "mixed_perturbation": p["accuracy"] if p else None,
                             "same_allocation": same_allocation(m, u),
                             "mixed_kl": m["kl"]["mean"], "uniform_kl": u["kl"]["mean"],
                             "mixed_bytes": m["weight_bytes"], "uniform_bytes": u["weight_bytes"],
                             "verdict": verdict_b(m, u),
                             "verdict_perturbation": None if p is None else verdict_b(p, u)})
    for hw, ort_label in (("int8", "ort-int8"), ("prune50%+int8", "prune50%+ort-int8"),
                          ("prune50%+int8 qat", "prune50%+ort-int8")):
        h, o = by.get(hw), by.get(ort_label)
        if h is None or o is None or "vs_ort_int8_b32" not in h:
            continue
        r32, r1 = h["vs_ort_int8_b32"], h["vs_ort_int8_b1"]
        out["ort"].append({"hwnas": hw, "ort": ort_label, "hwnas_accuracy": h["accuracy"],
                           "ort_accuracy": o["accuracy"], "hwnas_speedup_b32": h["speedup_b32"],
                           "ort_speedup_b32": o["speedup_b32"], "hwnas_over_ort_b32": r32, "hwnas_over_ort_b1": r1,
                           "hwnas_int_float_kernels": [h["int_kernels"], h["float_kernels"]],
                           "ort_int_float_kernels": [o["int_kernels"], o["float_kernels"]],
                           "verdict": speed_verdict(r32, by["fp32"].get("noise_b32")),
                           "verdict_b1": speed_verdict(r1, by["fp32"].get("noise_b1"))})
    for lab in ("prune50%+int8", "prune50%+int8 qat", "prune50%+ort-int8"):
        v = by.get(lab)
        if v is None or "vs_pruned_float_b32" not in v and "prune50%" not in by:
            continue
        rel = v.get("vs_pruned_float_b32")
        if rel is None:  # ort-int8 carries no comparison of its own: the same rounds give it through fp32
            continue
        out["int8_on_pruned"].append({"variant": lab, "pruned_float_speedup_b32": by["prune50%"]["speedup_b32"],
                                      "speedup_b32": v["speedup_b32"], "vs_pruned_float_b32": rel,
                                      "vs_pruned_float_b1": v["vs_pruned_float_b1"],
                                      "slower_than_pruned_float": rel["median"] < 1.0})
    return out


def fmt_s(x: float | None) -> str:
    """Seconds as ms or µs ('-' when missing)."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x * 1e3:.2f} ms" if x >= 1e-3 else f"{x * 1e6:.1f} µs"


def fmt_b(n: float) -> str:
    """Bytes as kB or MB."""
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def fmt_acc(a: dict[str, Any] | None) -> str:
    """An accuracy's mean ± std in percent ('-' when missing)."""
    return "-" if a is None else f"{a['mean'] * 100:.2f} ± {a['std'] * 100:.2f}"


def fmt_x(r: dict[str, Any] | None) -> str:
    """A pooled speed ratio as median [q25-q75] ('-' when missing)."""
    return "-" if r is None else f"{r['median']:.2f}x [{r['iqr'][0]:.2f}-{r['iqr'][1]:.2f}]"


def columns(result: dict[str, Any]) -> list[str]:
    """The table's header: the accuracy column names its sample size and seeds."""
    return ["variant", f"acc % (n={result['test']}, {len(result['seeds'])} seeds)", "KL", "weights", "ONNX", "MACs",
            "int/float kernels", "b1", "speed-up b1", "b32/sample", "speed-up b32", "vs ort-int8 b32",
            "vs prune50% b32", "host-cpu pred", "cortex-m7 pred"]


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The table's cells, one row per variant."""
    rows = []
    for r in result["variants"]:
        rows.append([r["label"], fmt_acc(r["accuracy"]), f"{r['kl']['mean']:.4f}", fmt_b(r["weight_bytes"]),
                     fmt_b(r["onnx_bytes"]), f"{r['macs'] / 1e6:.2f}M", f"{r['int_kernels']}/{r['float_kernels']}",
                     fmt_s(r["b1_median_s"]), fmt_x(r["speedup_b1"]), fmt_s(r["b32_median_s"]),
                     fmt_x(r["speedup_b32"]), fmt_x(r.get("vs_ort_int8_b32")), fmt_x(r.get("vs_pruned_float_b32")),
                     fmt_s(r.get("pred_host-cpu_latency_s")), fmt_s(r.get("pred_cortex-m7_latency_s"))])
    return rows


def print_table(result: dict[str, Any]) -> None:
    """The subject's table on the console."""
    t = Table(title=f"{result['subject']} (test n={result['test']} samples, {result['task']}, "
                    f"seeds {','.join(map(str, result['seeds']))})")
    for c in columns(result):
        t.add_column(c, justify="left" if c == "variant" else "right")
    for row in table_rows(result):
        t.add_row(*row)
    console.print(t)


def pareto(points: list[tuple[float, float]], larger_x_better: bool) -> list[int]:
    """Indices of points not dominated (higher accuracy y; larger or smaller x), sorted by x."""
    keep = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 >= x if larger_x_better else x2 <= x) and y2 >= y and (x2, y2) != (x, y)
                        for x2, y2 in points)
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    """Mean accuracy (± std over seeds) against median speed-up and size per subject, Pareto fronts
    dashed; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colors = {"fp32": "black", "int8": "tab:blue", "ort-int8": "tab:olive", "int4": "tab:purple", "mixed": "tab:red",
              "mixed-pert": "tab:pink", "greedy": "tab:orange", "uniform": "tab:gray", "prune": "tab:green",
              "prune+int8": "tab:cyan", "prune+ort-int8": "tab:brown"}
    fig, axes = plt.subplots(len(results), 2, figsize=(17, 6 * len(results)), squeeze=False, constrained_layout=True)
    for row, res in zip(axes, results, strict=True):
        vs = res["variants"]
        acc = np.array([v["accuracy"]["mean"] * 100 for v in vs])
        err = np.array([v["accuracy"]["std"] * 100 for v in vs])
        # Zoom on the top 6 points when most variants lie there; the others sit on the floor, marked v.
        floor = acc[0] - 6 if np.mean(acc >= acc[0] - 6) >= 0.5 else None
        for ax, key, larger, xlabel in ((row[0], "speedup_b32", True, "measured speed-up vs fp32, batch 32 "
                                                                       "(median of rounds, x)"),
                                        (row[1], "weight_bytes", False, "weight size (bytes, log)")):
            xs = [float(v[key]["median"] if key == "speedup_b32" else v[key]) for v in vs]
            shown = [max(y, floor) if floor is not None else y for y in acc]
            groups: dict[tuple[float, float], list[str]] = {}
            for v, x, y, e, true in zip(vs, xs, shown, err, acc, strict=True):
                clipped = floor is not None and true < floor
                marker = "v" if clipped else "s" if v["stage"] == "qat" else "o"
                ax.errorbar(x, y, yerr=None if clipped else e, c=colors[v["family"]], marker=marker, ms=5, lw=0.8,
                            zorder=3)
                text = v["label"] + (f" ({true:.1f}%)" if clipped else "")
                groups.setdefault((float(f"{x:.3g}"), round(y, 2)), []).append(text)
            for (x, y), names in groups.items():
                ax.annotate(", ".join(names), (x, y), fontsize=5.5, xytext=(3, 2), textcoords="offset points")
            front = pareto(list(zip(xs, acc.tolist(), strict=True)), larger)
            ax.plot([xs[i] for i in front], [shown[i] for i in front], "--", c="tab:red", lw=1, zorder=2)
            if key == "weight_bytes":
                ax.set_xscale("log")
            else:
                ax.axvline(1.0, c="k", lw=0.5)
            if floor is not None:
                ax.set_ylim(floor - 0.3, min(100.5, max(acc + err) + 0.5))
            ax.set_xlabel(xlabel)
            metric = "test accuracy" if res["task"] == "classify" else "top-1 agreement with fp32"
            ax.set_ylabel(f"{metric} (%, mean ± std of {len(res['seeds'])} seeds, n={res['test']})")
            ax.set_title(f"{res['subject']} (test n={res['test']}, seeds {','.join(map(str, res['seeds']))})")
            ax.grid(alpha=0.3)
        handles = [plt.Line2D([], [], ls="", marker="o", c=c, label=f) for f, c in colors.items()]
        handles += [plt.Line2D([], [], ls="", marker="s", c="gray", label="after QAT"),
                    plt.Line2D([], [], ls="", marker="v", c="gray", label="below the axis (value in label)"),
                    plt.Line2D([], [], ls="--", c="tab:red", label="Pareto front")]
        row[1].legend(handles=handles, fontsize=7, loc="lower right")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def pm(s: dict[str, Any], scale: float = 100.0, unit: str = "") -> str:
    """A stat as 'mean ± std' (scaled)."""
    return f"{s['mean'] * scale:.2f} ± {s['std'] * scale:.2f}{unit}"


def markdown(doc: dict[str, Any]) -> str:
    """The results as Markdown: per subject a table, the aims' verdicts, hwnas against onnxruntime's
    quantizer and int8 on the pruned model; then the notes."""
    lines = ["# Compression: pruning, quantization and both on real subjects", "",
             f"`tools/bench/compression.py{' --quick' if doc['quick'] else ''}` on {doc['machine']['date']}, "
             f"{doc['machine']['cpu']}, onnxruntime {doc['machine']['onnxruntime']}, torch {doc['machine']['torch']}; "
             f"seeds {', '.join(map(str, doc['seeds']))}. "
             f"Accuracies: mean ± std over the seeds, n test samples each. Latency: one onnxruntime thread, median, "
             f"variants interleaved with fp32; speed-ups: median [interquartile range] of the per-round ratios of all "
             f"seeds pooled. Aim (a) uses batch-32 throughput and is judged on the means. Predictions: host-cpu "
             f"{doc['predictors']['host-cpu']}, cortex-m7 {doc['predictors']['cortex-m7']}. Whole run "
             f"{doc['total_s'] / 60:.1f} min.", ""]
    for res in doc["subjects"]:
        cols = columns(res)
        lines += [f"## {res['subject']} ({res['task']}, train {res['train']}, test n = {res['test']}, "
                  f"seeds {', '.join(map(str, res['seeds']))})", "", f"Seeds vary {res['seed_varies']}.", ""]
        fp32 = next(v for v in res["variants"] if v["label"] == "fp32")
        if "noise_b32" in fp32:
            lines += [f"Noise floor: fp32 timed against a second session of itself in every timing group, "
                      f"batch 32 {fmt_x(fp32['noise_b32'])}, batch 1 {fmt_x(fp32['noise_b1'])} "
                      f"({fp32['noise_b32']['rounds']} rounds); a ratio inside it is no difference.", ""]
        if res.get("seed_cut"):
            lines += [f"Cut to fit the time budget: {res['seed_cut']}", ""]
        lines += ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in res["table"]]
        a = res["aims"]
        lines += ["", "Aim (a), 50% pruning + int8 (drop: fp32 minus the variant, paired by seed):", ""]
        for k, v in a["a"].items():
            which = "the aim" if k == "qat/qdq" else "PTQ only"
            d = v["drop_points"]
            lines.append(f"- {k} ({which}): drop {d['mean']:+.2f} ± {d['std']:.2f} points (n = {d['n']}, "
                         f"{d['seeds']} seeds), speed-up b32 {fmt_x(v['speedup_b32'])} (b1 {fmt_x(v['speedup_b1'])}, "
                         f"{v['speedup_b32']['rounds']} rounds): **{v['verdict']}**")
        if a["int8_on_pruned"]:
            lines += ["", "int8 on the 50%-pruned model against the pruned float model (same rounds; below 1x the "
                      "int8 model is slower than the float one it came from):", ""]
            for p in a["int8_on_pruned"]:
                slower = "**slower** than" if p["slower_than_pruned_float"] else "faster than"
                lines.append(f"- {p['variant']}: {fmt_x(p['speedup_b32'])} vs fp32, pruned float "
                             f"{fmt_x(p['pruned_float_speedup_b32'])}; pruned+int8 vs pruned float: b32 "
                             f"{fmt_x(p['vs_pruned_float_b32'])}, b1 {fmt_x(p['vs_pruned_float_b1'])}: {slower} "
                             f"the pruned float model at batch 32")
        if a["ort"]:
            lines += ["", "hwnas's int8 against onnxruntime's own quantize_static (QDQ, per-channel, same "
                      "calibration inputs), timed in the same rounds; hwnas/ort is hwnas's throughput over ort's:", "",
                      f"| hwnas | ort | hwnas acc % (n={res['test']}) | ort acc % | hwnas speed-up b32 | "
                      "ort speed-up b32 | hwnas/ort b32 | hwnas/ort b1 | int/float kernels hwnas, ort | verdict |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for o in a["ort"]:
                hk, ok = o["hwnas_int_float_kernels"], o["ort_int_float_kernels"]
                lines.append(f"| {o['hwnas']} | {o['ort']} | {fmt_acc(o['hwnas_accuracy'])} | "
                             f"{fmt_acc(o['ort_accuracy'])} | {fmt_x(o['hwnas_speedup_b32'])} | "
                             f"{fmt_x(o['ort_speedup_b32'])} | {fmt_x(o['hwnas_over_ort_b32'])} | "
                             f"{fmt_x(o['hwnas_over_ort_b1'])} | {hk[0]}/{hk[1]}, {ok[0]}/{ok[1]} | {o['verdict']} |")
            losses = [o for o in a["ort"] if o["verdict"].startswith("MISS")]
            ties = [o for o in a["ort"] if o["verdict"].startswith("TIE")]
            lines += ["", "hwnas loses to onnxruntime's quantizer at batch 32 on: " + "; ".join(
                f"{o['hwnas']} ({o['hwnas_over_ort_b32']['median']:.3f}x)" for o in losses) + "."
                if losses else "hwnas's int8 is at least as fast as onnxruntime's quantizer at batch 32 here, "
                               "or within the noise floor."]
            if ties:
                lines += ["Within the noise floor (slower than ort by less than fp32 against itself): " + "; ".join(
                    f"{o['hwnas']} ({o['hwnas_over_ort_b32']['median']:.3f}x)" for o in ties) + "."]
        lines += ["", "Aim (b), mixed vs uniform at equal size (accuracy %, mean ± std; verdicts on the means):", "",
                  "| stage | budget | mixed (Hessian) | uniform | greedy | mixed (perturbation) | verdict (Hessian) "
                  "| verdict (perturbation) |", "|---|---|---|---|---|---|---|---|"]
        for b in a["b"]:
            lines.append(f"| {b['stage']} | {b['budget']:g} | {fmt_acc(b['mixed'])} | {fmt_acc(b['uniform'])} | "
                         f"{fmt_acc(b['greedy'])} | {fmt_acc(b['mixed_perturbation'])} | {b['verdict']} | "
                         f"{b['verdict_perturbation']} |")
        diag = "; ".join(f"{k}: {pm(v['accuracy'])}% (KL {v['kl']['mean']:.4f})" for k, v in res["diagnostics"].items())
        lines += ["", f"Diagnostics: {diag}.", ""]
    lines += ["## Notes", "", *[f"- {n}" for n in NOTES], ""]
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------------


def label(v: Variant) -> str:
    """The variant's name as tables show it (' qat' after quantization-aware training)."""
    extra = {"qat": " qat", "ft": "", "ptq": "", "-": ""}[v.stage]
    return v.name + extra


def to_json(v: Variant) -> dict[str, Any]:
    """A variant's settings and figures (one seed) as JSON-ready values."""
    return {"name": v.name, "label": label(v), "family": v.family, "stage": v.stage, "emission": v.emission,
            "budget": v.budget, "bits": v.bits, **v.info, **v.row}


def parse_seeds(text: str) -> tuple[int, ...] | None:
    """'0,1,2' as (0, 1, 2); None when empty, not integers or repeated."""
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        return None
    return seeds if seeds and len(set(seeds)) == len(seeds) and min(seeds) >= 0 else None


def main() -> int:
    """Builds, scores, times and prices every variant of each subject once per seed; writes
    compression.{json,md,png} with the seeds pooled."""
    ap = parser(__doc__, "digits-cnn only (unless --subjects), seeds 0,1, tiny calibration, training and timing "
                         "settings")
    ap.add_argument("--subjects", help="comma-separated subjects (default: all three; digits-cnn with --quick)")
    ap.add_argument("--seeds", help="comma-separated seeds, each a full run of every variant (default 0,1,2; "
                                    "0,1 with --quick)")
    args = ap.parse_args()
    default = QUICK_SUBJECTS if args.quick else SUBJECTS
    names = [n for n in (args.subjects or ",".join(default)).split(",") if n]
    unknown = [n for n in names if n not in SUBJECTS]
    if unknown:
        ap.error(f"unknown subject '{unknown[0]}' (known: {', '.join(SUBJECTS)})")
    seeds = (QUICK_SEEDS if args.quick else SEEDS) if args.seeds is None else parse_seeds(args.seeds)
    if seeds is None:
        ap.error(f"--seeds must be distinct non-negative integers separated by commas, not '{args.seeds}'")
    # Graph deep copies recurse along producer/user links: EfficientNet's exceed Python's default limit.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    t0 = time.perf_counter()
    cal = load_calibration("host-cpu")
    predictors = {"host-cpu": cal} if cal is not None else {}
    predictor_names = {"host-cpu": f"calibrated ({calibration_path(load_target('host-cpu'))})" if cal else
                       f"analytical roofline (no calibration at {calibration_path(load_target('host-cpu'))})",
                       "cortex-m7": "analytical"}
    console.print(f"compression study{' (quick)' if args.quick else ''}: {', '.join(names)}, seeds "
                  f"{','.join(map(str, seeds))}; host-cpu predictor {predictor_names['host-cpu']}")
    results = []
    with tempfile.TemporaryDirectory(prefix="hwnas-compression-") as tmp:
        for name in names:
            start = time.perf_counter()
            s = (QUICK if args.quick else SETTINGS)[name]
            runs = [run_subject(name, s, seed, i == 0, predictors, Path(tmp), t0) for i, seed in enumerate(seeds)]
            res = aggregate(runs)
            if not s.mixed_every_seed and len(seeds) > 1:
                res["seed_cut"] = (f"the Hessian/perturbation sensitivities and the mixed, greedy and uniform "
                                   f"variants ran with seed {seeds[0]} only (their rows show 1 seed); every other "
                                   f"variant ran with every seed")
            res["total_s"] = time.perf_counter() - start
            res["aims"] = aims(res)
            res["table"] = table_rows(res)
            print_table(res)
            results.append(res)

    verdicts = Table(title="aims (on the means over seeds; speed-ups median [IQR] of pooled rounds)")
    for c in ("subject", "aim", "detail", "verdict"):
        verdicts.add_column(c)
    for res in results:
        for k, a in res["aims"]["a"].items():
            d = a["drop_points"]
            detail = (f"drop {d['mean']:+.2f} ± {d['std']:.2f} pt (n={d['n']}, {d['seeds']} seeds), "
                      f"b32 {fmt_x(a['speedup_b32'])}, b1 {fmt_x(a['speedup_b1'])}")
            official = " (the aim)" if k == "qat/qdq" else " (diagnostic)"
            verdicts.add_row(res["subject"], f"(a) {k}{official}", detail, a["verdict"])
        for p in res["aims"]["int8_on_pruned"]:
            verdicts.add_row(res["subject"], f"{p['variant']} vs pruned float",
                             f"b32 {fmt_x(p['vs_pruned_float_b32'])} "
                             f"(pruned float {fmt_x(p['pruned_float_speedup_b32'])} vs fp32)",
                             "SLOWER" if p["slower_than_pruned_float"] else "faster")
        for o in res["aims"]["ort"]:
            verdicts.add_row(res["subject"], f"{o['hwnas']} vs {o['ort']}",
                             f"hwnas/ort b32 {fmt_x(o['hwnas_over_ort_b32'])}, b1 {fmt_x(o['hwnas_over_ort_b1'])}; "
                             f"acc {fmt_acc(o['hwnas_accuracy'])} vs {fmt_acc(o['ort_accuracy'])} (n={res['test']})",
                             o["verdict"])
        for b in res["aims"]["b"]:
            g = f", greedy {fmt_acc(b['greedy'])}" if b["greedy"] is not None else ""
            if b["mixed_perturbation"] is not None:
                g += f", mixed (perturbation) {fmt_acc(b['mixed_perturbation'])}"
            detail = (f"mixed {fmt_acc(b['mixed'])} vs w{EQUAL_WIDTH[b['budget']]}a8 {fmt_acc(b['uniform'])}{g} "
                      f"(n={res['test']})")
            verdicts.add_row(res["subject"], f"(b) {b['stage']} @{b['budget']:g}", detail,
                             f"{b['verdict']} / pert. {b['verdict_perturbation']}")
    console.print(verdicts)

    total = time.perf_counter() - t0
    doc = {"benchmark": "compression", "quick": args.quick, "seeds": list(seeds),
           "machine": environment(ort_threads_timed=1), "predictors": predictor_names, "method": METHOD,
           "ort_quantizer": ORT_QUANTIZER, "budgets": list(BUDGETS), "mixed_bits": list(MIXED_BITS),
           "prune_ratios": list(PRUNE_RATIOS), "aim_a": {"max_drop_points": AIM_DROP * 100, "min_speedup": AIM_SPEEDUP,
                                                         "batch": 32, "stage": "qat", "emission": "qdq",
                                                         "judged_on": "mean drop over seeds, median of pooled rounds"},
           "total_s": total, "subjects": results}
    wrote = [write_json(args.out, "compression", doc), write_markdown(args.out, "compression", markdown(doc))]
    out_png = args.out / "compression.png"
    if not args.quick and plot(results, out_png):  # matplotlib costs a quick run seconds for nothing
        wrote.append(out_png)
    console.print(f"total {total / 60:.1f} min; wrote " + ", ".join(str(p) for p in wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
