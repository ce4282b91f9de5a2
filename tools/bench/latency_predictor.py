"""How well does a kernel-level calibration predict whole-model latency on this CPU?

    .venv/bin/python tools/bench/latency_predictor.py [--n 320] [--samples 2000] [--calibration PATH] [--quick]
                                                      [--out DIR]

nn-Meter (Zhang et al., MobiSys 2021) predicts a model's latency as the sum of its kernels'
latencies, each from a predictor fitted to measured single-kernel models, with the runtime's
fusions detected first. This calibrates host-cpu (single-kernel models only; `--calibration`
reuses a file), then measures `sample_architectures(n, seed)` (NAS-Bench-201 cells at 32x32
with 16/32/64 channels, MobileNetV2-like nets of varied width, depth, kernel and resolution)
and the 9 light models of the onnx wheel, each after `canonicalize`, whole with onnxruntime on
one thread. It compares three estimates (FLOPs times one fitted constant, the host-cpu
roofline, the calibrated predictor) by % within +-10%, MAPE, RMSE and Kendall tau; reports
how far sums of per-kernel measurements are from whole-model latency; and fits the predictor
few-shot to 2 threads from 1-20 measured models. Results: tools/bench/results/latency_predictor.{json,md}.
`--quick` (QUICK) calibrates a few dozen kernels and measures a few models for a tenth of a second each.
"""

from __future__ import annotations

import datetime
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from common import environment, parser, write_json, write_markdown
from rich.console import Console
from scipy.stats import kendalltau

from hwnas.backends.cost import estimate
from hwnas.backends.emit.onnx import to_onnx
from hwnas.backends.measure import measure_onnxruntime
from hwnas.backends.target import load_target
from hwnas.calibrate import Calibration, calibrate, read_calibration
from hwnas.calibrate.fewshot import fit_setting, kernel_sums, predict_from_sums
from hwnas.calibrate.timing import time_kernel
from hwnas.frontends import load_graph
from hwnas.ir.graph import Graph
from hwnas.ir.registry import op_counts
from hwnas.passes import PassRunner, parse_pipeline
from hwnas.search.spaces import iter_architectures, to_graph

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
FEW_SHOT_SIZES = (1, 2, 5, 10, 20)
CALIBRATION_SIZES = (1000, 2000, 3000)
FEW_SHOT_DRAWS = 5
QUICK = {"n": 4, "samples": 48, "isolated": 1, "few_shot_models": 4, "light": ("squeezenet",), "budget_s": 0.1,
         "warm_up_s": 0.5}
console = Console(stderr=True)


def light_models(names: tuple[str, ...] | None = None) -> list[Path]:
    """The onnx wheel's light models (those called `light_<name>` for `names`; all when None)."""
    return [p for p in sorted(LIGHT.glob("*.onnx")) if names is None or p.stem.removeprefix("light_") in names]


def iter_models(n: int, seed: int, light: list[Path]) -> Iterator[tuple[str, str, Graph]]:
    """(name, family, canonical graph) of every benchmark model, built one at a time: holding
    hundreds of graphs makes Python's garbage collector crawl."""
    pipeline = parse_pipeline("canonicalize")
    for name, module, shape in iter_architectures(n, seed):
        graph = PassRunner().run(pipeline, to_graph(module, shape, name)).graph
        yield name, "nb201" if "nb201" in name else "mbv2", graph
    for path in light:
        yield path.stem, "light", PassRunner().run(pipeline, load_graph(path)).graph


def flops(graph: Graph) -> int:
    """The graph's FLOPs (two per MAC where an op counts only MACs)."""
    return sum(max(c.flops, 2 * c.macs) for c in map(op_counts, graph.nodes) if c is not None)


def measure(model: onnx.ModelProto | Path, threads: int, profile: bool = False,
            budget_s: float = 1.0) -> tuple[float, float]:
    """Median whole-model seconds over about `budget_s` of runs (10 to 50 after a fifth of that
    of warm-up, at least 3 runs), and with `profile` the sum of the profiler's per-node medians."""
    first = measure_onnxruntime(model, threads=threads, warmup=1, repeats=1)
    per_run = first.median_s
    warmup = int(min(50, max(3, 0.2 * budget_s / per_run)))
    repeats = int(min(50, max(10, budget_s / per_run)))
    m = measure_onnxruntime(model, threads=threads, warmup=warmup, repeats=repeats, profile=profile)
    return m.median_s, sum(m.per_node_s.values())


def metrics(pred: list[float], true: list[float]) -> dict[str, float]:
    """How well `pred` matches `true` (seconds): % within 5% and 10%, MAPE, RMSE, Kendall τ, median ratio."""
    p, t = np.array(pred), np.array(true)
    rel = p / t - 1
    tau = kendalltau(p, t).statistic if len(p) > 1 else float("nan")
    return {"within_10pct": float(np.mean(np.abs(rel) <= 0.10) * 100),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05) * 100), "mape_pct": float(np.mean(np.abs(rel)) * 100),
            "rmse_ms": float(np.sqrt(np.mean((p - t) ** 2)) * 1e3),
            "kendall_tau": float(tau), "median_ratio": float(np.median(p / t)), "n": len(p)}


def isolated_sum(graph: Graph, threads: int = 1) -> float:
    """The naive sum: every priced node of `graph` (with its hwnas-fused activation) cut out as its
    own model and timed by wall clock, as a fusion-unaware kernel table would add them."""
    report = estimate(graph, "host-cpu")
    total = 0.0
    for c in report.nodes:
        if c.latency_s is None or c.bound.value in ("free", "fused"):
            continue
        sub = _single_node_model(graph, c.node)
        if sub is not None:
            total += time_kernel(sub, threads=threads, warmup=3, repeats=20, budget_s=0.05).wall_s
    return total


def _single_node_model(graph: Graph, name: str) -> onnx.ModelProto | None:
    from onnx import helper, numpy_helper

    node = graph.node_by_name(name)
    chain = [node]
    if node.ann.fused_activation is not None:
        chain.append(graph.node_by_name(node.ann.fused_activation.node))
    inputs, inits = [], []
    for v in node.inputs:
        if v is None:
            continue
        if v.const is not None:
            inits.append(numpy_helper.from_array(v.const, v.name))
        elif v.producer is not None and v.producer.op in ("Constant", "ConstantOfShape"):
            return None
        else:
            inputs.append(helper.make_tensor_value_info(v.name, v.type.dtype.value, list(v.type.shape)))
    for extra in chain[1:]:
        for v in extra.inputs[1:]:
            if v is not None and v.const is not None:
                inits.append(numpy_helper.from_array(v.const, v.name))
    nodes = []
    for n in chain:
        proto = helper.make_node(n.op, [("" if v is None else v.name) for v in n.inputs], [v.name for v in n.outputs])
        from hwnas.ir.attributes import attr_to_onnx

        proto.attribute.extend(attr_to_onnx(k, a) for k, a in n.attrs.items())
        nodes.append(proto)
    out = chain[-1].outputs[0]
    g = helper.make_graph(nodes, "one", inputs, [helper.make_tensor_value_info(out.name, out.type.dtype.value, None)],
                          initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in graph.opset.items()])
    model.ir_version = 8
    return model


def few_shot_study(models: list[dict[str, Any]], rng: np.random.Generator) -> dict[str, Any]:
    """Refit to 2 threads from k measured models (k in FEW_SHOT_SIZES, several random draws from
    a pool of 20), scored on the other models measured at 2 threads. Uses each model's kernel
    sums, which is exactly what `refit_few_shot` and `estimate` compute from its graph."""
    size = min(20, len(models) // 2)
    pool, test = models[:size], models[size:]
    truth = [m["t2_s"] for m in test]
    unadjusted = [m["calibrated_s"] for m in test]
    out: dict[str, Any] = {"pool": len(pool), "test": len(test), "unadjusted": metrics(unadjusted, truth), "by_k": {},
                           "settings": {}}
    for k in FEW_SHOT_SIZES:
        runs = []
        if k > len(pool):
            break
        for _ in range(FEW_SHOT_DRAWS if k < len(pool) else 1):
            pick = rng.choice(len(pool), size=k, replace=False)
            setting = fit_setting("threads2", [pool[i]["sums"] for i in pick], [pool[i]["t2_s"] for i in pick])
            runs.append(metrics([predict_from_sums(setting, m["sums"]) for m in test], truth))
        out["by_k"][str(k)] = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
        out["by_k"][str(k)]["draws"] = len(runs)
        out["settings"][str(k)] = {"scales": setting.scales, "per_kernel_s": setting.per_kernel_s}
        console.print(f"  few-shot k={k}: within 10% {out['by_k'][str(k)]['within_10pct']:.1f}%, "
                      f"MAPE {out['by_k'][str(k)]['mape_pct']:.1f}%")
    return out


def main() -> int:
    """Calibrates (or reads a calibration), measures and estimates every model; writes latency_predictor.{json,md}."""
    ap = parser(__doc__, f"{QUICK['samples']} kernels, {QUICK['n']} architectures and light_squeezenet, "
                f"{QUICK['budget_s']} s of runs per measurement")
    ap.add_argument("--n", type=int, default=320, help="generated architectures")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--samples", type=int, default=5000, help="kernels to calibrate on")
    ap.add_argument("--calibration", type=Path, help="reuse this calibration file instead of measuring one")
    ap.add_argument("--isolated", type=int, default=16, help="models whose kernels are also timed one by one")
    ap.add_argument("--few-shot-models", type=int, default=100, help="models also measured at 2 threads")
    args = ap.parse_args()
    budget_s, warm_up_s, light = 1.0, 2.0, light_models()
    if args.quick:
        args.n, args.samples, args.isolated = QUICK["n"], QUICK["samples"], QUICK["isolated"]
        args.few_shot_models = QUICK["few_shot_models"]
        budget_s, warm_up_s, light = QUICK["budget_s"], QUICK["warm_up_s"], light_models(QUICK["light"])
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="hwnas-bench-"))

    t0 = time.perf_counter()
    cal_path = args.calibration or work / "host-cpu.json"
    if args.calibration is None:
        calibrate("host-cpu", cal_path, samples=args.samples)
    timings["calibrate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cal = read_calibration(cal_path)
    cal.fit_all()
    timings["load_and_fit_s"] = time.perf_counter() - t0
    console.print(f"calibration: {len(cal.samples)} kernels, {timings['calibrate_s']:.0f} s; "
                  f"load + fit {timings['load_and_fit_s']:.2f} s")

    # The same calibration cut to its first N kernels: how accuracy grows with calibration size.
    subsets = {n: Calibration(cal.target, cal.measured_with, [k for k in cal.samples if k.index < n])
               for n in CALIBRATION_SIZES if n < len(cal.samples)}
    target = load_target("host-cpu")
    rng = np.random.default_rng(args.seed)
    total = args.n + len(light)
    few_idx = set(rng.permutation(args.n)[: args.few_shot_models].tolist())
    iso_idx = set(range(args.isolated))
    models: list[dict[str, Any]] = []
    _warm_up(warm_up_s)
    t0 = time.perf_counter()
    with console.status("") as status:
        for i, (name, family, graph) in enumerate(iter_models(args.n, args.seed, light)):
            status.update(f"model {i + 1}/{total}: build, measure (1 and 2 threads), estimate")
            model = to_onnx(graph)
            path = work / f"{i:03d}.onnx"
            onnx.save(model, path)
            m: dict[str, Any] = {"name": name, "family": family, "path": path, "flops": flops(graph),
                                 "nodes": len(graph.nodes)}
            m["t1a_s"], m["profiled_sum_s"] = measure(model, 1, profile=True, budget_s=budget_s)
            m["roofline_s"] = estimate(graph, target).latency_s
            m["calibrated_s"] = estimate(graph, target, predictor=cal).latency_s
            for n, sub in subsets.items():
                m[f"calibrated_{n}_s"] = estimate(graph, target, predictor=sub).latency_s
            if i in few_idx:
                m["t2a_s"], _ = measure(model, 2, budget_s=budget_s)
                m["sums"] = kernel_sums(cal, graph, target)
            if i in iso_idx:
                m["isolated_sum_s"] = isolated_sum(graph)
            models.append(m)
    timings["build_measure_estimate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for round_ in ("b", "c"):
        # Two more rounds, minutes apart: a model's latency is the median of its three medians, so
        # that a neighbour's burst of load (this is a 2-core VM) during one round does not count.
        with console.status("") as status:
            for i, m in enumerate(models):
                status.update(f"round {round_} {i + 1}/{len(models)}")
                m[f"t1{round_}_s"], _ = measure(m["path"], 1, budget_s=budget_s)
                if "t2a_s" in m:
                    m[f"t2{round_}_s"], _ = measure(m["path"], 2, budget_s=budget_s)
    for m in models:
        m["t1_s"] = float(np.median([m["t1a_s"], m["t1b_s"], m["t1c_s"]]))
        if "t2a_s" in m:
            m["t2_s"] = float(np.median([m["t2a_s"], m["t2b_s"], m["t2c_s"]]))
    timings["later_rounds_s"] = time.perf_counter() - t0

    truth = [m["t1_s"] for m in models]
    per_flop = float(np.exp(np.mean(np.log(np.array(truth) / np.array([m["flops"] for m in models])))))
    for m in models:
        m["flops_s"] = m["flops"] * per_flop  # one constant, fitted in log space on all models
    results: dict[str, Any] = {"estimates": {}, "by_family": {}, "flops_seconds_per_flop": per_flop}
    for method in ("flops", "roofline", "calibrated"):
        results["estimates"][method] = metrics([m[f"{method}_s"] for m in models], truth)
        for fam in ("nb201", "mbv2", "light"):
            sel = [m for m in models if m["family"] == fam]
            results["by_family"].setdefault(fam, {})[method] = metrics([m[f"{method}_s"] for m in sel],
                                                                       [m["t1_s"] for m in sel])
    results["by_calibration_size"] = {str(n): metrics([m[f"calibrated_{n}_s"] for m in models], truth)
                                      for n in subsets}
    results["by_calibration_size"][str(len(cal.samples))] = results["estimates"]["calibrated"]
    # How well the machine agrees with itself: each round against the median of the three.
    rounds = np.array([[m[f"t1{r}_s"] / m["t1_s"] for r in "abc"] for m in models])
    results["measurement_noise"] = {
        "round_over_median_p10": float(np.percentile(rounds, 10)),
        "round_over_median_p90": float(np.percentile(rounds, 90)),
        "rounds_within_10pct": float(np.mean(np.abs(rounds - 1) <= 0.1) * 100),
        "models_all_rounds_within_10pct": float(np.mean(np.all(np.abs(rounds - 1) <= 0.1, axis=1)) * 100),
        "round_a_as_prediction": metrics([m["t1a_s"] for m in models], [m["t1_s"] for m in models]),
    }
    picked = [m for m in models if "isolated_sum_s" in m]
    results["sums_of_parts"] = {
        "profiler_sum": metrics([m["profiled_sum_s"] for m in models], truth),
        "isolated_kernels_sum": metrics([m["isolated_sum_s"] for m in picked], [m["t1_s"] for m in picked]),
        "calibrated_on_same_models": metrics([m["calibrated_s"] for m in picked], [m["t1_s"] for m in picked]),
        "profiler_bias_s": cal.measured_with["profiler_bias_s"],
    }
    few = [m for m in models if "t2_s" in m]
    results["few_shot_2_threads"] = few_shot_study(few, rng)

    timings["total_s"] = time.perf_counter() - t_start
    report = {
        "benchmark": "latency_predictor", "quick": args.quick,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": environment(calibrated_on=cal.measured_with.get("machine")),
        "args": {k: str(v) for k, v in vars(args).items()},
        "calibration": {"kernels": len(cal.samples), "groups": _group_counts(cal), "threads": 1,
                        "profiler_bias_s": cal.measured_with["profiler_bias_s"]},
        "timings_s": timings, **results,
        "models": [{k: v for k, v in m.items() if k not in ("path", "sums")} for m in models],
    }
    write_json(args.out, "latency_predictor", report)
    write_markdown(args.out, "latency_predictor", markdown(report))
    console.print(markdown(report))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _warm_up(seconds: float = 2.0) -> None:
    """Run something for a while first: a fresh process's first sessions run slow (page faults,
    the CPU leaving its idle state), which would be charged to the first models."""
    from hwnas.calibrate.kernels import build

    model = build({"family": "conv", "cin": 64, "cout": 64, "k": 3, "stride": 1, "h": 56, "w": 56, "group": 1,
                   "pad": 1, "act": "Relu", "residual": False})
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        measure_onnxruntime(model, warmup=1, repeats=10)


def _group_counts(cal: Calibration) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in cal.samples:
        counts[s.group] = counts.get(s.group, 0) + 1
    return counts


def markdown(r: dict[str, Any]) -> str:
    """The results as Markdown tables: all models, per family, per calibration size, noise, sums, few-shot."""
    def row(name: str, m: dict[str, float]) -> str:
        return (f"| {name} | {m['n']} | {m['within_10pct']:.1f}% | {m['mape_pct']:.1f}% | {m['rmse_ms']:.3f} | "
                f"{m['kendall_tau']:.3f} | {m['median_ratio']:.3f} |")

    head = ("| estimate | models | within ±10% | MAPE | RMSE (ms) | Kendall τ | median pred/true |\n"
            "|---|---|---|---|---|---|---|")
    t = r["timings_s"]
    lines = [
        "# Latency predictor: calibrated kernels vs whole-model onnxruntime latency",
        "",
        f"{r['date']}, {r['machine']['cpu']}, onnxruntime {r['machine']['onnxruntime']}, 1 thread. "
        f"Calibration: {r['calibration']['kernels']} single-kernel models ({t['calibrate_s']:.0f} s to measure; "
        f"loading and fitting {t['load_and_fit_s']:.2f} s). Whole run: {t['total_s'] / 60:.1f} min.",
        "",
        "## All models", "", head,
    ]
    lines += [row(k, v) for k, v in r["estimates"].items()]
    for fam, ms in r["by_family"].items():
        lines += ["", f"## {fam}", "", head] + [row(k, v) for k, v in ms.items()]
    lines += ["", "## Calibrated accuracy against calibration size (the same file's first N kernels)", "", head]
    lines += [row(f"{n} kernels", v) for n, v in r["by_calibration_size"].items()]
    noise = r["measurement_noise"]
    lines += ["", "## Measurement noise", "",
              "Each model was measured in three rounds minutes apart; its latency is the median. A single round "
              f"against that median: 10th-90th percentile {noise['round_over_median_p10']:.3f}-"
              f"{noise['round_over_median_p90']:.3f}; {noise['rounds_within_10pct']:.1f}% of single measurements "
              f"within ±10% (all three rounds for {noise['models_all_rounds_within_10pct']:.1f}% of models). "
              "The first round used as if it were a prediction of the median:", "", head,
              row("one measurement of the same model", noise["round_a_as_prediction"])]
    s = r["sums_of_parts"]
    lines += ["", "## Sums of per-kernel measurements vs whole-model latency", "", head,
              row("onnxruntime profiler, per-node medians summed", s["profiler_sum"]),
              row("each kernel cut out and timed alone, summed", s["isolated_kernels_sum"]),
              row("calibrated predictor (same models)", s["calibrated_on_same_models"])]
    f = r["few_shot_2_threads"]
    lines += ["", f"## Few-shot refit to 2 threads ({f['test']} held-out models, mean over draws from a pool "
              f"of {f['pool']})",
              "", head, row("1-thread calibration, unadjusted", f["unadjusted"])]
    lines += [row(f"refit on {k} model(s)", v) for k, v in f["by_k"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
