"""Compression study: accuracy, size and speed of pruning, quantization and both on real subjects.

    .venv/bin/python tools/bench/compression.py [--subjects mnist-cnn,digits-cnn,efficientnet-lite0] [--quick]
                                                [--out DIR]

For each subject (a task of `hwnas.tasks`) this builds, from its fp32 graph: uniform int8 PTQ
emitted as QDQ (onnxruntime's integer kernels); uniform w4a4 PTQ and after a short QAT with
distillation; mixed precision (weights of 2 to 8 bits, activations 8, Hessian-trace
sensitivities, exact MILP) at 0.25, 0.375 and 0.5 of the 8-bit weight size, each budget against
the greedy allocation and the uniform width of equal size (2, 3, 4 bits), PTQ and (digit
subjects) QAT; 30/50/70% channel pruning (l1, kept channels in multiples of 8) reached in 10%
steps, each fine-tuned with distillation; 50% pruning then int8 (PTQ, then QAT). Every variant
gets its test accuracy (or top-1 agreement with fp32), output KL against fp32, weight bytes,
serialized ONNX bytes, params and MACs, onnxruntime latency at batch 1 and throughput at batch
32 (one thread, variants interleaved with fp32 so drift hits all alike; the speed-ups are ratios
within one run), and host-cpu / cortex-m7 predictions of `estimate`.

The protocol is fixed up front (seed 0, the settings in SETTINGS); the aims are judged on it:
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
from typing import Any

import numpy as np
import onnx
import torch
from common import Phase, environment, parser, ratio, session, time_rounds, write_json, write_markdown
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
SEED = 0
BUDGETS = (0.25, 0.375, 0.5)
EQUAL_WIDTH = {0.25: 2, 0.375: 3, 0.5: 4}
MIXED_BITS = (2, 3, 4, 5, 6, 8)
PRUNE_RATIOS = (0.3, 0.5, 0.7)
TARGETS = ("host-cpu", "cortex-m7")
METHOD = "minmax"  # activation ranges and weight scales (MSE clipping loses EfficientNet's depthwise centre taps)
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
    "EfficientNet-Lite0's split is 4 photos x 10 views each: one view is 2.5 points, and views of a photo are "
    "correlated; its 40 training views are too few to re-estimate BatchNorm statistics, so fine-tuning keeps them. "
    "digits-cnn's test split has 540 samples (one is 0.19 points).",
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


SETTINGS = {
    "mnist-cnn": Settings(256, 256, 2, 1e-3, 2, 1e-4, 64, True, 1, 15, 30, 8, 99, 64),
    "digits-cnn": Settings(256, 256, 3, 1e-3, 2, 1e-4, 64, True, 1, 15, 30, 8, 99, 64),
    # 40 training views: "epochs" of 5 steps; torch on both cores or fine-tuning would not fit the time budget.
    "efficientnet-lite0": Settings(40, 8, 2, 1e-4, 1, 1e-4, 8, False, 2, 5, 5, 1, 7, 8),
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


def emit(name: str, family: str, stage: str, graph: Graph, **kw: Any) -> Variant:
    """A variant with its graph emitted as QDQ ONNX when quantized, else as float ONNX."""
    model = emit_onnx(graph, check=False)
    return Variant(name, family, stage, graph, model, "qdq" if is_quantized(graph) else "onnx", **kw)


def quantized(graph: Graph, bits: dict[str, tuple[int, int]], calib: dict[str, np.ndarray], samples: int) -> Graph:
    """A copy of `graph` quantized per layer (w_bits, a_bits), min-max calibrated on `calib`."""
    g = copy.deepcopy(graph)
    quantize_layers(g, bits, method=METHOD, calib=calib, samples=samples)
    return g


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
           "weight_bytes": weight_bytes(v.graph), "onnx_bytes": len(v.model.SerializeToString()),
           "params": int(params), "macs": int(macs),
           "int_kernels": sum(ops[k] for k in INT_KERNELS), "float_kernels": sum(ops[k] for k in FLOAT_KERNELS)}
    if v.emission == "qdq":
        k = min(settings.fidelity, len(x))
        with torch.no_grad():
            emulated = to_torch(v.graph)(torch.from_numpy(np.ascontiguousarray(x[:k]))).numpy()
        row["fidelity_top1"] = float((emulated.argmax(1) == got[:k].argmax(1)).mean())
        row["fidelity_max_abs"] = float(np.abs(emulated - got[:k]).max())
    v.row.update(row)


def predict_costs(v: Variant, predictors: dict[str, Any]) -> None:
    """The host-cpu and cortex-m7 estimates of a variant (batch bound to 1), into its row."""
    bound = bound_copy(v.graph)
    for t in TARGETS:
        r = estimate(bound, t, predictors.get(t))
        v.row[f"pred_{t}_latency_s"] = r.latency_s
        v.row[f"pred_{t}_energy_j"] = r.energy_j
        v.row[f"pred_{t}_weight_bytes"] = r.weight_bytes
        v.row[f"pred_{t}_fits"] = r.fits
        if r.unpriced:
            v.row[f"pred_{t}_unpriced"] = dict(r.unpriced)


def time_variants(variants: list[Variant], task: Task, s: Settings, t0: float) -> None:
    """Median batch-1 latency and batch-32 time of every variant on one thread. Variants run in
    groups that all include fp32, interleaved round by round (order rotated each round); each
    speed-up is fp32's median over the variant's, both from the same group, with the median
    and interquartile range of the per-round ratios beside it."""
    x = task.test[0]
    x1, x32 = x[:1], np.concatenate([x] * math.ceil(32 / len(x)))[:32]
    fp32, rest = variants[0], variants[1:]
    step = max(1, s.group - 1)
    for gi in range(0, len(rest), step):
        group = [fp32, *rest[gi : gi + step]]
        sessions = [session(v.model, threads=1, source=v.name) for v in group]
        name = sessions[0].get_inputs()[0].name
        # Warm-up: three batch-1 runs and one batch-32 run each, then rounds of both.
        phases = {"b1": Phase([partial(sess.run, None, {name: x1}) for sess in sessions], s.reps_b1, warmup=3),
                  "b32": Phase([partial(sess.run, None, {name: x32}) for sess in sessions], s.reps_b32, warmup=1)}
        times = time_rounds(phases, s.rounds)
        del sessions, phases
        per = len(group)
        for key in ("b1", "b32"):
            base = times[key][0]
            for i, v in enumerate(group):
                t = times[key][i]
                med = float(np.median(t))
                if v is fp32 and gi > 0:
                    v.row.setdefault(f"{key}_fp32_groups_s", []).append(med)
                    continue
                scale = 32 if key == "b32" else 1
                v.row.update({f"{key}_median_s": med / scale, f"{key}_p10_s": float(np.percentile(t, 10)) / scale,
                              f"{key}_p90_s": float(np.percentile(t, 90)) / scale,
                              **ratio(base, t).to_json(f"speedup_{key}")})
        say(f"  timed {per - 1 if gi else per} variant(s) with fp32 alongside", t0)


# -- one subject ------------------------------------------------------------------------------------


def run_subject(name: str, s: Settings, predictors: dict[str, Any], work: Path, t0: float) -> dict[str, Any]:
    """Every variant of one subject built, evaluated, priced and timed, with the phases' seconds."""
    phases: dict[str, float] = {}
    caught: list[str] = []

    def phase(label: str, start: float) -> None:
        phases[label] = time.perf_counter() - start

    start = time.perf_counter()
    task = load_task(name, **s.loader)
    base = canonical(task.graph)
    train_x, train_y = task.train
    calib = {task.input_name: train_x[: s.calib]}
    teacher = task.reference_logits("train")
    phase("load_s", start)
    say(f"{name}: train {len(train_x)}, test {task.sample_size} ({task.metric})", t0)

    def tune(graph: Graph, epochs: float, lr: float) -> list[float]:
        cfg = FinetuneConfig(epochs=epochs, lr=lr, batch_size=s.batch, kd_alpha=0.5, temperature=4.0, seed=SEED,
                             threads=s.threads)
        return finetune(graph, task.train, cfg, teacher_logits=teacher)

    variants: list[Variant] = []
    with warnings.catch_warnings(record=True) as caught_w:
        warnings.simplefilter("always")
        start = time.perf_counter()
        variants.append(emit("fp32", "fp32", "-", base))
        g8 = quantized(base, uniform(base, 8, 8), calib, s.calib)
        variants.append(emit("int8", "int8", "ptq", g8))
        g4 = quantized(base, uniform(base, 4, 4), calib, s.calib)
        variants.append(emit("w4a4", "int4", "ptq", g4))
        phase("ptq_s", start)
        say(f"{name}: int8 and w4a4 PTQ built", t0)

        start = time.perf_counter()
        nodes = [n for n in base.nodes if quantizable(n)]
        hx, hy = train_x[: s.hessian], train_y[: s.hessian]
        sens = sensitivities(base, nodes, MIXED_BITS, hx, "hessian", hy, w_method=METHOD)
        costs = layer_costs(base, nodes, MIXED_BITS, "size")
        full8 = sum(costs[n.name][8] for n in nodes)
        mixed_sens = {k: {b: v[b] for b in MIXED_BITS} for k, v in sens.items()}
        mixed_costs = {k: {b: v[b] for b in MIXED_BITS} for k, v in costs.items()}
        # The other sensitivity the pass offers: the output change when one layer alone is quantized.
        pert = sensitivities(base, nodes, MIXED_BITS, hx[:64], "perturbation", w_method=METHOD)
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
                variants.append(emit(f"{family}@{budget:g}", family, "ptq", g, budget=budget, bits=dict(plan.bits),
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
        pruned50 = None
        g, losses = copy.deepcopy(task.graph), []
        original = {grp.name: grp.channels for grp in channel_groups(g)}
        for k in range(1, round(max(PRUNE_RATIOS) / PRUNE_STEP) + 1):  # 10%, 20%, ...: seed 003's loop
            target = k * PRUNE_STEP
            prune_channels(g, ratios_toward(g, original, target), "l1", MULTIPLE)
            losses += tune(g, s.prune_epochs, s.prune_lr)
            if any(abs(target - r) < 1e-9 for r in PRUNE_RATIOS):
                c = canonical(g)
                variants.append(emit(f"prune{target:.0%}", "prune", "ft", c, info={"losses": list(losses)}))
                if abs(target - 0.5) < 1e-9:
                    pruned50 = c
        phase("prune_s", start)
        say(f"{name}: pruned {', '.join(f'{r:.0%}' for r in PRUNE_RATIOS)} and fine-tuned", t0)

        start = time.perf_counter()
        assert pruned50 is not None
        p8 = quantized(pruned50, uniform(pruned50, 8, 8), calib, s.calib)
        variants.append(emit("prune50%+int8", "prune+int8", "ptq", p8))
        p8q = copy.deepcopy(p8)
        losses = tune(p8q, s.qat_epochs, s.qat_lr)
        variants.append(emit("prune50%+int8", "prune+int8", "qat", p8q, info={"losses": losses}))
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
    return {"subject": name, "task": TASK_KIND[task.metric], "train": len(train_x), "test": task.sample_size,
            "settings": asdict(s), "diagnostics": diagnostics, "phases_s": phases,
            "warnings": caught,
            "variants": variants}


# -- aims, tables, plots ---------------------------------------------------------------------------


def find(variants: list[Variant], name: str, stage: str, emission: str = "qdq") -> Variant | None:
    """The variant with this name, stage and emission, if it was built."""
    return next((v for v in variants if v.name == name and v.stage == stage and v.emission == emission), None)


def aims(result: dict[str, Any]) -> dict[str, Any]:
    """Verdicts of aim (a), 50% pruning + int8, and aim (b), mixed against uniform at each budget."""
    vs = result["variants"]
    fp32 = vs[0].row["accuracy"]
    out: dict[str, Any] = {"a": {}, "b": []}
    for emission in ("qdq",):
        for stage in ("qat", "ptq"):
            v = find(vs, "prune50%+int8", stage, emission)
            if v is None:
                continue
            drop = fp32 - v.row["accuracy"]
            ok_acc, ok_speed = drop <= AIM_DROP + 1e-12, v.row["speedup_b32"] >= AIM_SPEEDUP
            out["a"][f"{stage}/{emission}"] = {
                "drop_points": drop * 100, "speedup_b32": v.row["speedup_b32"], "speedup_b1": v.row["speedup_b1"],
                "speedup_b32_rounds": v.row["speedup_b32_rounds"],
                "accuracy_ok": ok_acc, "speed_ok": ok_speed, "speed_ok_b1": v.row["speedup_b1"] >= AIM_SPEEDUP,
                "verdict": "PASS" if ok_acc and ok_speed else "MISS"}
    for stage in ("ptq", "qat"):
        for budget in BUDGETS:
            m = find(vs, f"mixed@{budget:g}", stage)
            u = find(vs, f"w{EQUAL_WIDTH[budget]}a8@{budget:g}", stage)
            g = find(vs, f"greedy@{budget:g}", stage)
            p = find(vs, f"mixed-pert@{budget:g}", stage)
            if m is None or u is None:
                continue
            ma, ua = m.row["accuracy"], u.row["accuracy"]
            same = m.bits == u.bits  # the solver may choose the uniform allocation itself
            out["b"].append({"stage": stage, "budget": budget, "mixed": ma, "uniform": ua, "same_allocation": same,
                             "greedy": g.row["accuracy"] if g else None,
                             "mixed_perturbation": p.row["accuracy"] if p else None, "mixed_kl": m.row["kl"],
                             "uniform_kl": u.row["kl"], "mixed_bytes": m.row["weight_bytes"],
                             "uniform_bytes": u.row["weight_bytes"],
                             "verdict": "PASS" if ma > ua else ("TIE" if ma == ua else "MISS")
                             + (" (same allocation)" if same else ""),
                             "verdict_perturbation": None if p is None else
                             "PASS" if p.row["accuracy"] > ua else ("TIE" if p.row["accuracy"] == ua else "MISS")
                             + (" (same allocation)" if p.bits == u.bits else "")})
    return out


def label(v: Variant) -> str:
    """The variant's name as tables show it (' qat' after quantization-aware training)."""
    extra = {"qat": " qat", "ft": "", "ptq": "", "-": ""}[v.stage]
    return v.name + extra


def fmt_s(x: float | None) -> str:
    """Seconds as ms or µs ('-' when missing)."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x * 1e3:.2f} ms" if x >= 1e-3 else f"{x * 1e6:.1f} µs"


def fmt_b(n: float) -> str:
    """Bytes as kB or MB."""
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


COLUMNS = ("variant", "acc %", "KL", "weights", "ONNX", "MACs", "int/float kernels", "b1", "speed-up b1",
           "b32/sample", "speed-up b32", "host-cpu pred", "cortex-m7 pred")


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The table's cells, one row per variant."""
    rows = []
    for v in result["variants"]:
        r = v.row
        rows.append([label(v), f"{r['accuracy'] * 100:.2f}", f"{r['kl']:.4f}", fmt_b(r["weight_bytes"]),
                     fmt_b(r["onnx_bytes"]), f"{r['macs'] / 1e6:.2f}M", f"{r['int_kernels']}/{r['float_kernels']}",
                     fmt_s(r["b1_median_s"]), f"{r['speedup_b1']:.2f}x", fmt_s(r["b32_median_s"]),
                     f"{r['speedup_b32']:.2f}x", fmt_s(r["pred_host-cpu_latency_s"]),
                     fmt_s(r["pred_cortex-m7_latency_s"])])
    return rows


def print_table(result: dict[str, Any]) -> None:
    """The subject's table on the console."""
    t = Table(title=f"{result['subject']} (test {result['test']} samples, {result['task']})")
    for c in COLUMNS:
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
    """Accuracy against speed-up and size per subject, Pareto fronts dashed; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colors = {"fp32": "black", "int8": "tab:blue", "int4": "tab:purple", "mixed": "tab:red", "mixed-pert": "tab:pink",
              "greedy": "tab:orange",
              "uniform": "tab:gray", "prune": "tab:green", "prune+int8": "tab:cyan"}
    fig, axes = plt.subplots(len(results), 2, figsize=(17, 6 * len(results)), squeeze=False, constrained_layout=True)
    for row, res in zip(axes, results, strict=True):
        vs = res["variants"]
        acc = np.array([v.row["accuracy"] * 100 for v in vs])
        # Zoom on the top 6 points when most variants lie there; the others sit on the floor, marked v.
        floor = acc[0] - 6 if np.mean(acc >= acc[0] - 6) >= 0.5 else None
        for ax, key, larger, xlabel in ((row[0], "speedup_b32", True, "measured speed-up vs fp32, batch 32 (x)"),
                                        (row[1], "weight_bytes", False, "weight size (bytes, log)")):
            xs = [float(v.row[key]) for v in vs]
            shown = [max(y, floor) if floor is not None else y for y in acc]
            groups: dict[tuple[float, float], list[str]] = {}
            for v, x, y, true in zip(vs, xs, shown, acc, strict=True):
                clipped = floor is not None and true < floor
                marker = "v" if clipped else "s" if v.stage == "qat" else "o"
                ax.scatter(x, y, c=colors[v.family], marker=marker, s=30, zorder=3)
                text = label(v) + (f" ({true:.1f}%)" if clipped else "")
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
                ax.set_ylim(floor - 0.3, min(100.5, max(acc) + 0.5))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy (%)" if res["task"] == "classify" else "top-1 agreement with fp32 (%)")
            ax.set_title(f"{res['subject']} (test {res['test']})")
            ax.grid(alpha=0.3)
        handles = [plt.Line2D([], [], ls="", marker="o", c=c, label=f) for f, c in colors.items()]
        handles += [plt.Line2D([], [], ls="", marker="s", c="gray", label="after QAT"),
                    plt.Line2D([], [], ls="", marker="v", c="gray", label="below the axis (value in label)"),
                    plt.Line2D([], [], ls="--", c="tab:red", label="Pareto front")]
        row[1].legend(handles=handles, fontsize=7, loc="lower right")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def markdown(doc: dict[str, Any]) -> str:
    """The results as Markdown: a table and the aims' verdicts per subject, then the notes."""
    lines = ["# Compression: pruning, quantization and both on real subjects", "",
             f"`tools/bench/compression.py{' --quick' if doc['quick'] else ''}` on {doc['machine']['date']}, "
             f"{doc['machine']['cpu']}, onnxruntime {doc['machine']['onnxruntime']}, torch {doc['machine']['torch']}. "
             f"Latency: one onnxruntime thread, median, variants interleaved with fp32; speed-ups are ratios within "
             f"the run. Aim (a) uses batch-32 throughput. Predictions: host-cpu {doc['predictors']['host-cpu']}, "
             f"cortex-m7 {doc['predictors']['cortex-m7']}. Whole run {doc['total_s'] / 60:.1f} min.", ""]
    for res in doc["subjects"]:
        lines += [f"## {res['subject']} ({res['task']}, train {res['train']}, test {res['test']})", "",
                  "| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in res["table"]]
        a = res["aims"]
        lines += ["", "Aim (a), 50% pruning + int8:", ""]
        for k, v in a["a"].items():
            which = "the aim" if k == "qat/qdq" else "PTQ only"
            lines.append(f"- {k} ({which}): drop {v['drop_points']:+.2f} points, speed-up b32 {v['speedup_b32']:.2f}x "
                         f"(b1 {v['speedup_b1']:.2f}x): **{v['verdict']}**")
        lines += ["", "Aim (b), mixed vs uniform at equal size:", "",
                  "| stage | budget | mixed (Hessian) | uniform | greedy | mixed (perturbation) | verdict (Hessian) "
                  "| verdict (perturbation) |", "|---|---|---|---|---|---|---|---|"]
        for b in a["b"]:
            g = f"{b['greedy'] * 100:.2f}" if b["greedy"] is not None else "-"
            p = f"{b['mixed_perturbation'] * 100:.2f}" if b["mixed_perturbation"] is not None else "-"
            lines.append(f"| {b['stage']} | {b['budget']:g} | {b['mixed'] * 100:.2f} | {b['uniform'] * 100:.2f} | {g} "
                         f"| {p} | {b['verdict']} | {b['verdict_perturbation']} |")
        diag = "; ".join(f"{k}: {v['accuracy'] * 100:.2f}% (KL {v['kl']:.4f})" for k, v in res["diagnostics"].items())
        lines += ["", f"Diagnostics: {diag}.", ""]
    lines += ["## Notes", "", *[f"- {n}" for n in NOTES], ""]
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------------


def to_json(v: Variant) -> dict[str, Any]:
    """A variant's settings and figures as JSON-ready values."""
    return {"name": v.name, "label": label(v), "family": v.family, "stage": v.stage, "emission": v.emission,
            "budget": v.budget, "bits": v.bits, **v.info, **v.row}


def main() -> int:
    """Builds, scores, times and prices every variant of each subject; writes compression.{json,md,png}."""
    ap = parser(__doc__, "digits-cnn only (unless --subjects), tiny calibration, training and timing settings")
    ap.add_argument("--subjects", help="comma-separated subjects (default: all three; digits-cnn with --quick)")
    args = ap.parse_args()
    default = QUICK_SUBJECTS if args.quick else SUBJECTS
    names = [n for n in (args.subjects or ",".join(default)).split(",") if n]
    unknown = [n for n in names if n not in SUBJECTS]
    if unknown:
        ap.error(f"unknown subject '{unknown[0]}' (known: {', '.join(SUBJECTS)})")
    # Graph deep copies recurse along producer/user links: EfficientNet's exceed Python's default limit.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    cal = load_calibration("host-cpu")
    predictors = {"host-cpu": cal} if cal is not None else {}
    predictor_names = {"host-cpu": f"calibrated ({calibration_path(load_target('host-cpu'))})" if cal else
                       f"analytical roofline (no calibration at {calibration_path(load_target('host-cpu'))})",
                       "cortex-m7": "analytical"}
    console.print(f"compression study{' (quick)' if args.quick else ''}: {', '.join(names)}; host-cpu predictor "
                  f"{predictor_names['host-cpu']}")
    results = []
    with tempfile.TemporaryDirectory(prefix="hwnas-compression-") as tmp:
        for name in names:
            start = time.perf_counter()
            res = run_subject(name, (QUICK if args.quick else SETTINGS)[name], predictors, Path(tmp), t0)
            res["total_s"] = time.perf_counter() - start
            res["aims"] = aims(res)
            res["table"] = table_rows(res)
            print_table(res)
            results.append(res)

    verdicts = Table(title="aims")
    for c in ("subject", "aim", "detail", "verdict"):
        verdicts.add_column(c)
    for res in results:
        for k, a in res["aims"]["a"].items():
            lo, hi = a["speedup_b32_rounds"]
            detail = (f"drop {a['drop_points']:+.2f} pt, b32 {a['speedup_b32']:.2f}x (rounds {lo:.2f}-{hi:.2f}), "
                      f"b1 {a['speedup_b1']:.2f}x")
            official = " (the aim)" if k == "qat/qdq" else " (diagnostic)"
            verdicts.add_row(res["subject"], f"(a) {k}{official}", detail, a["verdict"])
        for b in res["aims"]["b"]:
            g = f", greedy {b['greedy'] * 100:.2f}" if b["greedy"] is not None else ""
            if b["mixed_perturbation"] is not None:
                g += f", mixed (perturbation) {b['mixed_perturbation'] * 100:.2f}"
            detail = f"mixed {b['mixed'] * 100:.2f} vs w{EQUAL_WIDTH[b['budget']]}a8 {b['uniform'] * 100:.2f}{g}"
            verdicts.add_row(res["subject"], f"(b) {b['stage']} @{b['budget']:g}", detail,
                             f"{b['verdict']} / pert. {b['verdict_perturbation']}")
    console.print(verdicts)

    total = time.perf_counter() - t0
    doc = {"benchmark": "compression", "quick": args.quick, "seed": SEED, "machine": environment(ort_threads_timed=1),
           "predictors": predictor_names, "method": METHOD, "budgets": list(BUDGETS), "mixed_bits": list(MIXED_BITS),
           "prune_ratios": list(PRUNE_RATIOS), "aim_a": {"max_drop_points": AIM_DROP * 100, "min_speedup": AIM_SPEEDUP,
                                                         "batch": 32, "stage": "qat", "emission": "qdq"},
           "total_s": total,
           "subjects": [{**{k: v for k, v in r.items() if k != "variants"},
                         "variants": [to_json(v) for v in r["variants"]]} for r in results]}
    wrote = [write_json(args.out, "compression", doc), write_markdown(args.out, "compression", markdown(doc))]
    out_png = args.out / "compression.png"
    if not args.quick and plot(results, out_png):  # matplotlib costs a quick run seconds for nothing
        wrote.append(out_png)
    console.print(f"total {total / 60:.1f} min; wrote " + ", ".join(str(p) for p in wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
