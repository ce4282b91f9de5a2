"""How hwnas import + canonicalize + emit scales with graph size, beside plain onnx.load + onnx.save.

    .venv/bin/python tools/bench/ir_scale.py [--quick] [--repeats N] [--out DIR]

Aim: the hwnas path (import, canonicalize, emit) costs no more than 3x plain load+save of the
same file, and grows about linearly with node count. Figures go to tools/bench/results/ir_scale.json.

Beside it, the "onnx floor": onnx's own C++ steps that the hwnas path runs and cannot skip as it is
designed (load, version converter, shape inference with data propagation, checker, serialize,
write; `onnx_steps`), timed in the same round. The aim minus the floor is what is left for all of
hwnas's Python work (building the IR, canonicalizing, emitting). Beside that, the "bare Python"
steps (`bare_python`): one plain object per node and per value read from the loaded model, and
one NodeProto per node written back, with no attributes, weights, types or passes: less than any
Python IR does. The floor plus these is the least any Python IR on these onnx steps can reach.
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from common import environment, parser, write_json
from onnx import TensorProto, helper, numpy_helper, shape_inference, version_converter

import hwnas.frontends.onnx
from hwnas.backends.emit.onnx import save_onnx
from hwnas.passes import PassRunner, parse_pipeline

AIM = 3.0
RESNET = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
C, HW = 8, 16  # channels and spatial size: input 1x8x16x16


def make_graph(n_nodes: int, seed: int = 0) -> onnx.ModelProto:
    """Residual CNN blocks (Conv-BN-Relu-Conv-BN-Add-Relu) with a no-op (Identity, Dropout or
    same-shape Reshape) in every third block; padded with Identity to exactly `n_nodes` nodes."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits = [numpy_helper.from_array(np.array([1, C, HW, HW], np.int64), "shape")]

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def add(op: str, ins: list[str], **attrs: Any) -> str:
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(op, ins, [out], name=f"n{len(nodes)}", **attrs))
        return out

    def conv_bn(x: str, p: str) -> str:
        w = const(f"{p}_w", rng.normal(0, 0.1, (C, C, 3, 3)))
        y = add("Conv", [x, w, const(f"{p}_b", rng.normal(0, 0.1, C))], pads=[1, 1, 1, 1])
        bn = [const(f"{p}_{k}", v) for k, v in (("s", rng.uniform(0.5, 1.5, C)), ("o", rng.normal(0, 0.1, C)),
                                                 ("m", rng.normal(0, 0.1, C)), ("v", rng.uniform(0.5, 1.5, C)))]
        return add("BatchNormalization", [y, *bn])

    x, block, noops = "x", 0, [("Identity", []), ("Dropout", []), ("Reshape", ["shape"])]
    while len(nodes) + 8 <= n_nodes:
        y = add("Relu", [conv_bn(x, f"b{block}a")])
        if block % 3 == 0:
            op, extra = noops[(block // 3) % 3]
            y = add(op, [y, *extra])
        x = add("Relu", [add("Add", [conv_bn(y, f"b{block}b"), x])])
        block += 1
    while len(nodes) < n_nodes:
        x = add("Identity", [x])
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, C, HW, HW]) for n in ("x", x)]
    g = helper.make_graph(nodes, f"cnn{n_nodes}", [vi[0]], [vi[1]], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def measure(path: Path, out_dir: Path, repeats: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Median seconds per step over `repeats` runs, after one untimed warm-up run (lazy imports,
    onnxruntime start-up); totals are the median of per-run sums; the ratio both as the ratio of
    medians and as the median and interquartile range of per-run ratios, in wall time and in
    this process's CPU time (both paths run on one core; on a shared machine wall time also
    counts the waits for one). Each run starts from a collected heap (the garbage collector
    stays on while timing: its cost on big graphs is real)."""
    keys = ("load", "save", "import", "canon", "emit", "baseline", "hwnas", "floor", "bare")
    runs: dict[str, list[float]] = {k: [] for k in (*keys, *(f"{k}_cpu" for k in keys))}
    pipeline = parse_pipeline("canonicalize")

    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    for i in range(repeats + 1):
        gc.collect()
        t0 = now()
        m = onnx.load(str(path))
        t1 = now()
        onnx.save(m, str(out_dir / "base.onnx"))
        t2 = now()
        g = hwnas.frontends.onnx.import_onnx(path)
        t3 = now()
        res = PassRunner().run(pipeline, g)
        t4 = now()
        save_onnx(res.graph, out_dir / "hwnas.onnx")
        t5 = now()
        onnx_steps(path, out_dir / "floor.onnx")
        t6 = now()
        bare_python(m)
        t7 = now()
        for c, suffix in ((0, ""), (1, "_cpu")):
            steps = (t1[c] - t0[c], t2[c] - t1[c], t3[c] - t2[c], t4[c] - t3[c], t5[c] - t4[c], t2[c] - t0[c],
                     t5[c] - t2[c], t6[c] - t5[c], t7[c] - t6[c])
            for k, v in zip(keys, steps, strict=True):
                runs[k + suffix] += [v] if i else []
        del m, g, res
    med: dict[str, Any] = {k: statistics.median(v) for k, v in runs.items()}
    for suffix in ("", "_cpu"):
        med[f"ratio{suffix}"] = med[f"hwnas{suffix}"] / med[f"baseline{suffix}"]
        base = np.array(runs[f"baseline{suffix}"])
        med[f"floor_ratio{suffix}"] = float(np.median(np.array(runs[f"floor{suffix}"]) / base))
        med[f"least_ratio{suffix}"] = float(np.median((np.array(runs[f"floor{suffix}"])
                                                       + np.array(runs[f"bare{suffix}"])) / base))
        # Both paths run in every round, one after the other: the round's ratio sees the same
        # machine state (a neighbour's load) on both sides.
        per_round = np.array(runs[f"hwnas{suffix}"]) / np.array(runs[f"baseline{suffix}"])
        q25, q75 = np.percentile(per_round, [25, 75])
        med |= {f"ratio{suffix}_round_median": float(np.median(per_round)),
                f"ratio{suffix}_round_iqr": [float(q25), float(q75)],
                f"ratio{suffix}_rounds": [float(per_round.min()), float(per_round.max())]}
    return med, runs


def onnx_steps(path: Path, out: Path) -> None:
    """The part of the hwnas path that is onnx's own C++ and that the path cannot skip as it is
    designed: load, the version converter (below opset 17), shape inference with data
    propagation (on the model itself: hwnas drops large weights first, which only makes its
    share smaller), the checker and serialization of the emitted model, and the write."""
    m = onnx.load(str(path))
    if next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) < hwnas.frontends.onnx.MIN_OPSET:
        m = version_converter.convert_version(m, hwnas.frontends.onnx.MIN_OPSET)
    inferred = shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    data = inferred.SerializeToString()
    onnx.checker.check_model(data, full_check=False)
    out.write_bytes(data)


class _Value:
    __slots__ = ("name", "producer", "uses")

    def __init__(self, name: str) -> None:
        self.name, self.producer, self.uses = name, None, []


class _Node:
    __slots__ = ("op", "inputs", "outputs", "name")

    def __init__(self, op: str, inputs: list[_Value | None], outputs: list[_Value], name: str) -> None:
        self.op, self.inputs, self.outputs, self.name = op, inputs, outputs, name


def bare_python(m: onnx.ModelProto) -> onnx.GraphProto:
    """Less than any Python IR does on import and emission: one plain object per node and per value
    of the loaded model (no attributes, weights or types), then one NodeProto per node written back."""
    values: dict[str, _Value] = {}
    nodes = []
    for n in m.graph.node:
        ins = [values.get(x) for x in n.input[:]]
        outs = [_Value(o) for o in n.output[:]]
        values.update((v.name, v) for v in outs)
        nodes.append(_Node(n.op_type, ins, outs, n.name))
    g = onnx.GraphProto()
    for node in nodes:
        g.node.add(op_type=node.op, input=["" if v is None else v.name for v in node.inputs],
                   output=[v.name for v in node.outputs], name=node.name)
    return g


def _spread(row: dict[str, Any], suffix: str) -> str:
    lo, hi = row[f"ratio{suffix}_round_iqr"]
    return f"{row[f'ratio{suffix}_round_median']:.1f}x [{lo:.1f}-{hi:.1f}]"


def main() -> int:
    """Times both paths on the light ResNet-50 and generated graphs; writes ir_scale.json."""
    ap = parser(__doc__, "1 repeat, skip the 10,000-node graph")
    ap.add_argument("--repeats", type=int, default=None, help="runs per file; the median is kept (default 7)")
    args = ap.parse_args()
    repeats = max(1, args.repeats or (1 if args.quick else 7))
    sizes = [1000, 3000] if args.quick else [1000, 3000, 10000]

    with tempfile.TemporaryDirectory(prefix="ir_scale_") as tmp:
        d = Path(tmp)
        files: list[tuple[str, Path, int]] = [("light_resnet50", RESNET, len(onnx.load(str(RESNET)).graph.node))]
        for n in sizes:
            m = make_graph(n)
            onnx.checker.check_model(m)
            onnx.save(m, str(d / f"cnn{n}.onnx"))
            files.append((f"cnn{n}", d / f"cnn{n}.onnx", len(m.graph.node)))
        rows: list[dict[str, Any]] = []
        hdr = (f"{'file':<16}{'nodes':>7}{'MB':>6}{'baseline s':>12}{'hwnas s':>10}"
               f"{'import':>9}{'canon':>9}{'emit':>9}{'ratio':>8}  {'per-run: median [IQR]':<22}"
               f"{'CPU-time ratio, per run':<24}{'onnx floor':>11}{'+bare Python':>13}")
        print(f"repeats={repeats} (median)\n{hdr}\n{'-' * len(hdr)}")
        for name, path, nodes in files:
            r, runs = measure(path, d, repeats)
            mb = path.stat().st_size / 1e6
            rows.append({"file": name, "nodes": nodes, "mb": round(mb, 3), **r, "runs": runs})
            print(f"{name:<16}{nodes:>7}{mb:>6.1f}{r['baseline']:>12.4f}{r['hwnas']:>10.4f}"
                  f"{r['import']:>9.4f}{r['canon']:>9.4f}{r['emit']:>9.4f}{r['ratio']:>7.1f}x  "
                  f"{_spread(r, ''):<22}{_spread(r, '_cpu'):<24}{r['floor_ratio_cpu']:>10.1f}x"
                  f"{r['least_ratio_cpu']:>12.1f}x", flush=True)

    gen = [r for r in rows if r["file"].startswith("cnn")]
    x = np.log([r["nodes"] for r in gen])
    slopes = {k: float(np.polyfit(x, np.log([r[k] for r in gen]), 1)[0])
              for k in ("baseline", "hwnas", "import", "canon", "emit")}
    print("\nscaling over generated graphs, slope of log(time) vs log(nodes) (1.0 = linear):")
    for k, s in slopes.items():
        print(f"  {k:<9} {s:5.2f}  {'about linear' if s <= 1.2 else 'SUPERLINEAR'}")
    worst = max(rows, key=lambda r: r["ratio"])
    verdict = "meets" if worst["ratio"] <= AIM else "misses"
    print(f"\naim: hwnas <= {AIM:.0f}x plain load+save -> {verdict} it "
          f"(worst {worst['ratio']:.1f}x on {worst['file']}; ratios "
          + ", ".join(f"{r['file']} {r['ratio']:.1f}x" for r in rows) + "; per-run medians [IQR], wall: "
          + ", ".join(_spread(r, "") for r in rows) + "; CPU time: "
          + ", ".join(_spread(r, "_cpu") for r in rows) + ")")

    path = write_json(args.out, "ir_scale", {
        "benchmark": "ir_scale", "aim_ratio": AIM, "repeats": repeats, "quick": args.quick,
        "machine": environment(), "rows": rows, "slopes": slopes,
        "linear": {k: s <= 1.2 for k, s in slopes.items()},
        "meets_aim": worst["ratio"] <= AIM, "worst_ratio": worst["ratio"]})
    print("onnx floor: onnx's own steps inside the hwnas path (load, version converter, shape inference, "
          "checker, serialize, write), per-run CPU-time ratio to load+save: "
          + ", ".join(f"{r['file']} {r['floor_ratio_cpu']:.1f}x" for r in rows)
          + f"; what is left of the {AIM:.0f}x aim for hwnas's own Python: "
          + ", ".join(f"{max(AIM - r['floor_ratio_cpu'], 0):.1f}x" for r in rows))
    print("least any Python IR on these onnx steps can reach (the floor plus bare Python: one plain object per "
          "node and value read, one NodeProto per node written): "
          + ", ".join(f"{r['file']} {r['least_ratio_cpu']:.1f}x" for r in rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
