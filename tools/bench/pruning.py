"""Channel pruning makes real models smaller and faster: params, MACs and onnxruntime latency
before and after `prune-channels` on ResNet-50 (onnx's light model) and a MobileNetV2-like net,
with kept channel counts as they fall and rounded up to multiples of 8 (`multiple=8`, "×8").

    .venv/bin/python tools/bench/pruning.py [--ratios 0.3,0.5,0.7] [--rounds 7] [--repeats 5]

Every pruned model is verified and run in onnxruntime (one intra-op thread, batch 1, random
input). Latencies are measured side by side: each round runs every variant `repeats` times in
turn, so drift on the machine touches all of them alike; the figure is the median over all
rounds, and the speed-ups are ratios within this one run. The host-cpu cost model's
predicted speed-up is printed beside the measured one. Weights are not trained here (the
light model's are constants), so accuracy is not the point: `tools/bench/compression.py`
has pruning with fine-tuning on real data.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
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

RESULTS = Path(__file__).resolve().parent / "results"
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light"


def models() -> dict[str, Graph]:
    r50 = parse_pipeline("fold-constants").run(load_graph(LIGHT / "light_resnet50.onnx")).graph
    mbv2 = to_graph(build(MBConfig()), (1, 3, 224, 224), "mobilenetv2")
    return {"resnet50-light": r50, "mobilenetv2-like": mbv2}


def session(graph: Graph) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(to_onnx(graph).SerializeToString(), opts, providers=["CPUExecutionProvider"])


def measure(sessions: dict[str, ort.InferenceSession], x: np.ndarray, rounds: int, repeats: int) -> dict[str, float]:
    """Median seconds per run of each session, runs interleaved round by round."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():  # warm-up
        for _ in range(3):
            s.run(None, feeds[k])
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(repeats):
                t = time.perf_counter()
                s.run(None, feeds[k])
                times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", default="0.3,0.5,0.7")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    console = Console(width=140)
    ratios = [float(r) for r in args.ratios.split(",")]
    rows, started = [], time.perf_counter()
    for name, base in models().items():
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
        x = np.random.default_rng(0).standard_normal(base.inputs[0].type.shape).astype(np.float32)
        sessions = {k: session(g) for k, g in variants.items()}
        outputs = {k: s.run(None, {s.get_inputs()[0].name: x})[0] for k, s in sessions.items()}
        assert all(o.shape == outputs["0%"].shape and np.isfinite(o).all() for o in outputs.values())
        latency = measure(sessions, x, args.rounds, args.repeats)
        predicted = {k: estimate(g, "host-cpu").latency_s for k, g in variants.items()}
        for k, g in variants.items():
            params, macs = size(g)
            rows.append({"model": name, "pruned": k, "params": params, "macs": macs,
                         "latency_s": latency[k], "speedup": latency["0%"] / latency[k],
                         "predicted_latency_s": predicted[k], "predicted_speedup": predicted["0%"] / predicted[k]})
    table = Table(title="prune-channels (l1, uniform): size and onnxruntime latency, 1 thread, batch 1")
    for col in ("model", "pruned", "params", "MACs", "latency", "speed-up", "predicted speed-up"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], r["pruned"], f"{r['params']:,}", f"{r['macs']:,}", f"{r['latency_s'] * 1e3:.2f} ms",
                      f"{r['speedup']:.2f}×", f"{r['predicted_speedup']:.2f}×")
    console.print(table)
    doc = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": platform.processor()
           or platform.machine(), "cpu_count": os.cpu_count(), "onnxruntime": ort.__version__,
           "rounds": args.rounds, "repeats": args.repeats, "seconds": time.perf_counter() - started, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pruning.json").write_text(json.dumps(doc, indent=1))
    console.print(f"wrote {args.out / 'pruning.json'}")


if __name__ == "__main__":
    main()
