"""How fast a search prices a candidate: all 15,625 NAS-Bench-201 cells on every shipped target.

    .venv/bin/python tools/bench/search_cost.py [--targets a,b,...] [--check 50] [--seed 0] [--quick] [--out DIR]

Per target: cells priced per second by `hwnas.search.cost.NB201Cost` over the whole space, the
first pass (which fills the per-signature segment peaks, shared by targets with the same peak
rule: the first CPU/GPU/FPGA/analog target pays for them all) and a second, warm one; and for
`--check` random cells, the fast figures against `estimate()` on the network built as IR
(largest relative difference in latency, energy and peak memory, and on MCUs whether
estimate's order search reported itself exact). Beside them, what the fast path replaces:
building one network through torch tracing versus directly as IR, and one `estimate()`.
Writes tools/bench/results/search_cost.{json,md}.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from typing import Any

from common import environment, parser, write_json, write_markdown
from rich.console import Console

from hwnas.backends.cost import estimate
from hwnas.backends.target import available_targets, load_target
from hwnas.search.cost import NB201Cost
from hwnas.search.spaces import NB201Config, build_spec, to_graph
from hwnas.search.spaces.nasbench201 import NUM_ARCHS, OPS, Cell, format_arch
from hwnas.search.spaces.nb201 import NB201Space

QUICK_CELLS, QUICK_CHECK, BUILDS = 300, 1, 5


def cells(n: int) -> list[Cell]:
    """The first `n` cells in index order (all of them at n = 15,625)."""
    space = NB201Space()
    return [space.decode([(i // len(OPS) ** (5 - e)) % len(OPS) for e in range(6)]) for i in range(n)]


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a)


def run_target(name: str, space_cells: list[Cell], check: int, seed: int, console: Console) -> dict[str, Any]:
    target = load_target(name)  # host-cpu measures its machine here, once
    t0 = time.perf_counter()
    fast = NB201Cost(target)
    setup = time.perf_counter() - t0
    passes = []
    for _ in range(2):
        t0 = time.perf_counter()
        for c in space_cells:
            fast.price(c)
        passes.append(time.perf_counter() - t0)
    rng = random.Random(seed)
    space = NB201Space()
    worst = {"latency": 0.0, "energy": 0.0, "peak_memory": 0.0}
    estimate_s, mismatches = [], []
    for _ in range(check):
        cell = space.decode([rng.randrange(len(OPS)) for _ in range(6)])
        f = fast.price(cell)
        graph = space.build_ir(cell)
        t0 = time.perf_counter()
        r = estimate(graph, target)
        estimate_s.append(time.perf_counter() - t0)
        diff = {"latency": rel(f.latency_s, r.latency_s), "energy": rel(f.energy_j, r.energy_j),
                "peak_memory": rel(f.peak_memory_bytes, r.peak_memory_bytes)}
        for k, v in diff.items():
            worst[k] = max(worst[k], v)
        if max(diff.values()) > 1e-9 or f.fits != r.fits:
            mismatches.append({"cell": format_arch(cell), "fast_peak": f.peak_memory_bytes,
                               "estimate_peak": r.peak_memory_bytes, **diff, "fast_fits": f.fits,
                               "estimate_fits": r.fits,
                               "estimate_order_exact": r.extra.get("order_search_exact")})
    n = len(space_cells)
    out = {"target": name, "kind": target.kind, "setup_s": setup, "cells": n,
           "first_pass_s": passes[0], "warm_pass_s": passes[1], "first_pass_cells_per_s": n / passes[0],
           "warm_cells_per_s": n / passes[1], "signatures": len(fast._signatures), "checked": check,
           "max_rel_diff": worst, "mismatches": mismatches,
           "estimate_s_median": statistics.median(estimate_s) if estimate_s else None}
    console.print(f"  {name:12s} {n / passes[0]:9,.0f} cells/s first pass, {n / passes[1]:9,.0f} warm; "
                  f"{check} checked, max rel diff {max(worst.values()):.1e}, {len(mismatches)} differ; "
                  f"estimate() {out['estimate_s_median'] or 0:.3f} s")
    return out


def build_times(builds: int, seed: int) -> dict[str, Any]:
    """Seconds to build one network through torch tracing and directly as IR, side by side."""
    rng = random.Random(seed)
    space = NB201Space()
    torch_s, direct_s = [], []
    for _ in range(builds):
        cell = space.decode([rng.randrange(len(OPS)) for _ in range(6)])
        spec = NB201Config(format_arch(cell))
        t0 = time.perf_counter()
        to_graph(build_spec(spec), spec.input_shape, "x")
        torch_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        space.build_ir(cell)
        direct_s.append(time.perf_counter() - t0)
    return {"builds": builds, "torch_s_median": statistics.median(torch_s),
            "direct_s_median": statistics.median(direct_s),
            "speedup": statistics.median(torch_s) / statistics.median(direct_s)}


def markdown(doc: dict[str, Any]) -> str:
    b = doc["build"]
    lines = ["# Fast costing of NAS-Bench-201 cells", "",
             f"{doc['cells']:,} cells per target ({'quick run' if doc['quick'] else 'the whole space'}), one process "
             f"on {doc['machine']['cpu']} ({doc['machine']['usable_cpus']} usable CPUs, shared).", "",
             f"Building one network: torch tracing {b['torch_s_median']:.3f} s, directly as IR "
             f"{b['direct_s_median']:.3f} s ({b['speedup']:.0f}x, median of {b['builds']}).", "",
             "| target | kind | cells/s first pass | cells/s warm | signatures | checked | max rel. diff "
             "(lat / energy / peak) | differ | estimate() s |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for t in doc["targets"]:
        d = t["max_rel_diff"]
        lines.append(f"| {t['target']} | {t['kind']} | {t['first_pass_cells_per_s']:,.0f} | "
                     f"{t['warm_cells_per_s']:,.0f} | {t['signatures']} | {t['checked']} | "
                     f"{d['latency']:.1e} / {d['energy']:.1e} / {d['peak_memory']:.1e} | {len(t['mismatches'])} | "
                     f"{t['estimate_s_median'] or 0:.3f} |")
    diffs = [(t["target"], m) for t in doc["targets"] for m in t["mismatches"]]
    if diffs:
        lines += ["", "Cells where the fast figures differ from `estimate()`:", ""]
        for name, m in diffs:
            lines.append(f"- {name} `{m['cell']}`: peak {m['fast_peak']:,} B fast vs {m['estimate_peak']:,} B "
                         f"estimate (estimate's order search exact: {m['estimate_order_exact']})")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = parser(__doc__, f"{QUICK_CELLS} cells, {QUICK_CHECK} checked per target, 2 builds")
    ap.add_argument("--targets", default="", help="comma-separated targets (default: all shipped)")
    ap.add_argument("--check", type=int, default=50, help="random cells per target checked against estimate()")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console()
    names = [t for t in args.targets.split(",") if t] or available_targets()
    n = QUICK_CELLS if args.quick else NUM_ARCHS
    check = QUICK_CHECK if args.quick else args.check
    space_cells = cells(n)
    t0 = time.perf_counter()
    results = [run_target(name, space_cells, check, args.seed, console) for name in names]
    doc = {"benchmark": "search_cost", "quick": args.quick, "machine": environment(), "cells": n, "seed": args.seed,
           "build": build_times(2 if args.quick else BUILDS, args.seed), "targets": results,
           "wall_s": time.perf_counter() - t0}
    write_json(args.out, "search_cost", doc)
    write_markdown(args.out, "search_cost", markdown(doc))
    console.print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
