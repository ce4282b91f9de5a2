"""Channel pruning makes real models smaller and faster: params, MACs and onnxruntime latency
before and after `prune-channels` on ResNet-50 (onnx's light model) and a MobileNetV2-like net,
with kept channel counts as they fall and rounded up to multiples of 8 (`multiple=8`, "×8").

    .venv/bin/python tools/bench/pruning.py [--ratios 0.3,0.5,0.7] [--rounds 7] [--repeats 5] [--quick]
                                            [--out DIR]

Every pruned model is verified and run in onnxruntime (one intra-op thread, batch 1, random
input). Latencies are measured side by side: each round runs every variant `repeats` times in
turn, so drift on the machine touches all of them alike; the figure is the median over all
rounds, and the speed-ups are ratios within this one run (also per round: median and
interquartile range). The host-cpu cost model's predicted speed-up is printed beside the
measured one. Weights are not trained here (the light model's are constants), so accuracy is
not the point: `tools/bench/compression.py` has pruning with fine-tuning on real data.
Results: tools/bench/results/pruning.json.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnx
from common import Phase, environment, parser, ratio, session, time_rounds, write_json
from rich.console import Console
from rich.table import Table

from hwnas.backends.cost import estimate
from hwnas.backends.emit.onnx import to_onnx
from hwnas.compress.loop import size
from hwnas.frontends import load_graph
from hwnas.ir.graph import Graph
from hwnas.ir.verifier import verify
from hwnas.passes import parse_pipeline
from hwnas.passes.prune_channels import prune_channels
from hwnas.search.spaces import to_graph
from hwnas.search.spaces.mobilenetv2 import MBConfig, build

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light"
QUICK_RATIOS, QUICK_ROUNDS, QUICK_REPEATS, QUICK_MODELS = "0.5", 2, 2, ("mobilenetv2-like",)


def resnet50() -> Graph:
    """onnx's light ResNet-50 (random constant weights), its constant subgraphs folded."""
    return parse_pipeline("fold-constants").run(load_graph(LIGHT / "light_resnet50.onnx")).graph


def mobilenetv2() -> Graph:
    """The search space's MobileNetV2-like net at its default configuration, 224x224."""
    return to_graph(build(MBConfig()), (1, 3, 224, 224), "mobilenetv2")


MODELS = {"resnet50-light": resnet50, "mobilenetv2-like": mobilenetv2}


def main() -> int:
    """Prunes, verifies, times and prices every model and ratio; writes pruning.json."""
    ap = parser(__doc__, "MobileNetV2-like only, 50%, 2 rounds of 2 runs")
    ap.add_argument("--ratios", default="0.3,0.5,0.7")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.quick:
        args.ratios, args.rounds, args.repeats = QUICK_RATIOS, QUICK_ROUNDS, QUICK_REPEATS
    console = Console(width=140)
    ratios = [float(r) for r in args.ratios.split(",")]
    rows, started = [], time.perf_counter()
    names = QUICK_MODELS if args.quick else tuple(MODELS)
    for name in names:
        base = MODELS[name]()
        variants: dict[str, Graph] = {"0%": base}
        for r in ratios:
            for multiple in (1, 8):
                g = copy.deepcopy(base)
                t = time.perf_counter()
                prune_channels(g, r, "l1", multiple)
                seconds = time.perf_counter() - t
                verify(g)
                key = f"{r:.0%}" + (f" ×{multiple}" if multiple > 1 else "")
                variants[key] = g
                console.print(f"{name}: pruned {key} in {seconds:.2f} s")
        shape = base.inputs[0].static_shape
        if shape is None:
            raise ValueError(f"{name}: the input's shape {base.inputs[0].shape} is not static")
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        sessions = {k: session(to_onnx(g), threads=1, source=f"{name} {k}") for k, g in variants.items()}
        feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
        outputs = {k: s.run(None, feeds[k])[0] for k, s in sessions.items()}
        assert all(o.shape == outputs["0%"].shape and np.isfinite(o).all() for o in outputs.values())
        calls = [partial(s.run, None, feeds[k]) for k, s in sessions.items()]
        times = dict(zip(sessions, time_rounds({"b1": Phase(calls, args.repeats)}, args.rounds, rotate=False)["b1"],
                         strict=True))
        predicted = {k: estimate(g, "host-cpu").latency_s for k, g in variants.items()}
        for k, g in variants.items():
            params, macs = size(g)
            rows.append({"model": name, "pruned": k, "params": params, "macs": macs,
                         "latency_s": float(np.median(times[k])), **ratio(times["0%"], times[k]).to_json("speedup"),
                         "predicted_latency_s": predicted[k], "predicted_speedup": predicted["0%"] / predicted[k]})
    table = Table(title="prune-channels (l1, uniform): size and onnxruntime latency, 1 thread, batch 1")
    for col in ("model", "pruned", "params", "MACs", "latency", "speed-up", "rounds (IQR)", "predicted speed-up"):
        table.add_column(col, justify="right")
    for row in rows:
        lo, hi = row["speedup_round_iqr"]
        table.add_row(row["model"], row["pruned"], f"{row['params']:,}", f"{row['macs']:,}",
                      f"{row['latency_s'] * 1e3:.2f} ms", f"{row['speedup']:.2f}×", f"{lo:.2f}-{hi:.2f}×",
                      f"{row['predicted_speedup']:.2f}×")
    console.print(table)
    doc = {"benchmark": "pruning", "quick": args.quick, "machine": environment(ort_threads_timed=1),
           "ratios": ratios, "rounds": args.rounds, "repeats": args.repeats,
           "seconds": time.perf_counter() - started, "rows": rows}
    path = write_json(args.out, "pruning", doc)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
