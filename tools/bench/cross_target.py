"""Cross-target study: do the targets' cost models rank the same architectures the same way?

    .venv/bin/python tools/bench/cross_target.py [--n 200] [--seed 0] [--targets a,b,...] [--quick] [--out DIR]

Seed 004 (after HW-NAS-Bench, Li et al., ICLR 2021) shows devices disagree: the Kendall τ between
one device's latencies and another's over the same architectures is far from 1, so a network
searched for one target is not the one to ship to another. This prices `sample_architectures(n,
seed)` (NAS-Bench-201 cells and MobileNetV2-like nets) after `canonicalize` on every shipped
target, and writes the τ matrices (latency and energy, over all networks and per family) and the
overlap of each pair's 10% fastest networks to tools/bench/results/cross_target.{json,md}, and a
heatmap to cross_target.png when matplotlib is there. The graphs live in memory for one run only.
"""

from __future__ import annotations

import math
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from common import environment, parser, write_json, write_markdown
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau

from hwnas.backends.cost import estimate
from hwnas.backends.cost.report import format_joules, format_seconds
from hwnas.backends.target import Target, available_targets, load_target
from hwnas.ir.graph import Graph
from hwnas.passes import PassRunner, parse_pipeline
from hwnas.search.spaces import iter_architectures, to_graph

METRICS = ("latency", "energy")
TOP_FRACTION = 0.1
QUICK_N = 12


def build_graphs(n: int, seed: int, console: Console) -> tuple[dict[str, Graph], float]:
    """The canonicalized IR of `sample_architectures(n, seed)` (built one module at a time), by name."""
    pipeline = parse_pipeline("canonicalize")
    graphs: dict[str, Graph] = {}
    t0 = time.perf_counter()
    for i, (name, module, shape) in enumerate(iter_architectures(n, seed)):
        graphs[name] = PassRunner().run(pipeline, to_graph(module, shape, name)).graph
        if (i + 1) % 50 == 0 or i + 1 == n:
            console.print(f"  lowered {i + 1}/{n} ({time.perf_counter() - t0:.0f} s)")
    return graphs, time.perf_counter() - t0


def price(graphs: dict[str, Graph], target: Target) -> dict[str, Any]:
    """Latency, energy and fit of every graph on one target; a failing estimate is NaN, with its error."""
    lat, en, fits = [], [], []
    errors: dict[str, str] = {}
    unpriced: dict[str, int] = {}
    t0 = time.perf_counter()
    for name, g in graphs.items():
        try:
            r = estimate(g, target)
        except Exception as e:  # one bad estimate must not lose the whole study; it is reported
            errors[name] = f"{type(e).__name__}: {e}"
            r = None
        lat.append(r.latency_s if r else math.nan)
        en.append(r.energy_j if r else math.nan)
        fits.append(r.fits if r else False)
        if r is None:
            continue
        for op, count in r.unpriced.items():
            unpriced[op] = unpriced.get(op, 0) + count
    return {"latency": np.array(lat, float), "energy": np.array(en, float), "fits": np.array(fits),
            "errors": errors, "unpriced": unpriced, "seconds": time.perf_counter() - t0}


def tau_matrix(values: dict[str, np.ndarray], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kendall τ-b and its p-value for every pair of targets, over the masked networks both price."""
    names = list(values)
    tau, p = np.eye(len(names)), np.zeros((len(names), len(names)))
    for (i, a), (j, b) in combinations(enumerate(names), 2):
        x, y = values[a], values[b]
        ok = mask & np.isfinite(x) & np.isfinite(y)
        res = kendalltau(x[ok], y[ok]) if ok.sum() > 2 else None
        tau[i, j] = tau[j, i] = res.statistic if res is not None else math.nan
        p[i, j] = p[j, i] = res.pvalue if res is not None else math.nan
    return tau, p


def top_overlap(values: dict[str, np.ndarray], fraction: float) -> tuple[np.ndarray, int]:
    """Share of one target's `fraction` cheapest networks that are also among another's."""
    k = max(1, round(fraction * len(next(iter(values.values())))))
    # A target that prices fewer than k networks has no top set (NaN row and column).
    tops = [set(np.argsort(np.where(np.isfinite(v), v, np.inf), kind="stable")[:k]) if np.isfinite(v).sum() >= k
            else None for v in values.values()]
    return np.array([[len(a & b) / k if a is not None and b is not None else math.nan for b in tops]
                     for a in tops]), k


def off_diagonal(m: np.ndarray) -> np.ndarray:
    """The entries of a square matrix off its diagonal."""
    return m[~np.eye(len(m), dtype=bool)]


def matrix_table(title: str, names: list[str], m: np.ndarray, fmt: str = "{:+.2f}") -> Table:
    """A target-by-target matrix as a console table ('-' where undefined)."""
    table = Table(title=title)
    table.add_column("")
    for n in names:
        table.add_column(n, justify="right")
    for n, row in zip(names, m, strict=True):
        table.add_row(n, *(fmt.format(v) if math.isfinite(v) else "-" for v in row))
    return table


def markdown_matrix(names: list[str], m: np.ndarray, fmt: str = "{:+.2f}") -> str:
    """A target-by-target matrix as a Markdown table ('-' where undefined)."""
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for n, row in zip(names, m, strict=True):
        lines.append(f"| **{n}** | " + " | ".join(fmt.format(v) if math.isfinite(v) else "-" for v in row) + " |")
    return "\n".join(lines)


def heatmap(path: Path, names: list[str], panels: list[tuple[str, np.ndarray, float, float]]) -> bool:
    """The matrices as heatmaps side by side in one PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), constrained_layout=True)
    for ax, (title, m, lo, hi) in zip(np.atleast_1d(axes), panels, strict=True):
        im = ax.imshow(m, vmin=lo, vmax=hi, cmap="RdBu_r" if lo < 0 else "viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_title(title)
        for i, j in np.ndindex(m.shape):
            ax.text(j, i, f"{m[i, j]:.2f}" if math.isfinite(m[i, j]) else "-", ha="center", va="center", fontsize=7,
                    color="white" if (m[i, j] < (lo + hi) / 2 if lo >= 0 else abs(m[i, j]) > 0.7) else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def main() -> int:
    """Prices the sampled architectures on every target; writes cross_target.{json,md,png}."""
    ap = parser(__doc__, f"{QUICK_N} architectures, no heatmap")
    ap.add_argument("--n", type=int, default=200, help="architectures to sample (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="sample_architectures seed (default 0)")
    ap.add_argument("--targets", default="", help="comma-separated target names (default: every shipped target)")
    args = ap.parse_args()
    if args.quick:
        args.n = QUICK_N
    console = Console(width=None if sys.stdout.isatty() else 150)  # logs keep whole table rows

    names = [t for t in args.targets.split(",") if t] or available_targets()
    targets = {t: load_target(t) for t in names}
    console.print(f"cross-target study: {args.n} architectures (seed {args.seed}), {len(names)} targets: "
                  + ", ".join(names))
    graphs, lower_s = build_graphs(args.n, args.seed, console)
    arch_names = list(graphs)
    family = np.array(["nb201" if "-nb201-" in n else "mbv2" for n in arch_names])
    groups = {"all": np.ones(len(arch_names), bool), "nb201": family == "nb201", "mbv2": family == "mbv2"}

    costs: dict[str, dict[str, Any]] = {}
    summary = Table(title=f"per-target costs over {args.n} architectures")
    for col in ("target", "kind", "median latency", "range", "median energy", "fit", "s"):
        summary.add_column(col, justify="left" if col in ("target", "kind") else "right")
    for t, target in targets.items():
        c = costs[t] = price(graphs, target)
        lat, en = c["latency"], c["energy"]
        if c["errors"]:
            first = next(iter(c["errors"].items()))
            console.print(f"[yellow]{t}: {len(c['errors'])}/{args.n} estimates failed, e.g. {first[0]}: {first[1]}[/]")
        if not np.isfinite(lat).any():
            summary.add_row(t, target.kind, "failed", "", "", "", f"{c['seconds']:.1f}")
            continue
        summary.add_row(t, target.kind, format_seconds(float(np.nanmedian(lat))),
                        f"{format_seconds(float(np.nanmin(lat)))} – {format_seconds(float(np.nanmax(lat)))}",
                        format_joules(float(np.nanmedian(en))), f"{int(c['fits'].sum())}/{args.n}",
                        f"{c['seconds']:.1f}")
    console.print(summary)

    result: dict[str, Any] = {"taus": {}, "pvalues": {}, "top_overlap": {}}
    for metric in METRICS:
        values = {t: costs[t][metric] for t in names}
        for group, mask in groups.items():
            tau, p = tau_matrix(values, mask)
            result["taus"].setdefault(group, {})[metric] = tau
            result["pvalues"].setdefault(group, {})[metric] = p
        overlap, k = top_overlap(values, TOP_FRACTION)
        result["top_overlap"][metric] = overlap
    for metric in METRICS:
        console.print(matrix_table(f"Kendall τ between targets' {metric}, all {args.n} architectures", names,
                                   result["taus"]["all"][metric]))
    console.print(matrix_table(f"overlap of the {k} fastest ({TOP_FRACTION:.0%}) architectures", names,
                               result["top_overlap"]["latency"], "{:.2f}"))

    spread = Table(title="Kendall τ off the diagonal, by family")
    for col in ("family", "n", "metric", "mean τ", "min τ (pair)", "max τ (pair)"):
        spread.add_column(col, justify="left" if col in ("family", "metric") else "right")
    pairs = [(a, b) for i, a in enumerate(names) for j, b in enumerate(names) if i != j]
    for group, mask in groups.items():
        for metric in METRICS:
            m = result["taus"][group][metric]
            flat = off_diagonal(m)
            if not len(flat) or np.all(np.isnan(flat)):
                continue
            lo, hi = int(np.nanargmin(flat)), int(np.nanargmax(flat))
            spread.add_row(group, str(int(mask.sum())), metric, f"{np.nanmean(flat):+.2f}",
                           f"{flat[lo]:+.2f} ({'/'.join(pairs[lo])})", f"{flat[hi]:+.2f} ({'/'.join(pairs[hi])})")
    console.print(spread)

    def tolist(m: np.ndarray) -> list[list[float | None]]:
        return [[None if not math.isfinite(v) else round(float(v), 4) for v in row] for row in m]

    doc = {
        "benchmark": "cross_target", "quick": args.quick, "n": args.n, "seed": args.seed, "pipeline": "canonicalize",
        "top_fraction": TOP_FRACTION, "top_k": k, "machine": environment(), "lower_seconds": lower_s,
        "targets": {t: {"kind": targets[t].kind, "description": targets[t].description,
                        "fits": int(costs[t]["fits"].sum()), "unpriced": costs[t]["unpriced"],
                        "errors": costs[t]["errors"], "seconds": costs[t]["seconds"]} for t in names},
        "target_order": names,
        "kendall_tau": {g: {m: tolist(v) for m, v in d.items()} for g, d in result["taus"].items()},
        "kendall_p": {g: {m: tolist(v) for m, v in d.items()} for g, d in result["pvalues"].items()},
        "top_overlap": {m: tolist(v) for m, v in result["top_overlap"].items()},
        "architectures": [
            {"name": a, "family": str(family[i]), "nodes": len(graphs[a].nodes),
             **{f"{m}.{t}": (float(costs[t][m][i]) if math.isfinite(costs[t][m][i]) else None)
                for t in names for m in METRICS},
             "fits": [t for t in names if costs[t]["fits"][i]]}
            for i, a in enumerate(arch_names)],
    }
    out_json = write_json(args.out, "cross_target", doc)

    md = [f"# Cross-target study: Kendall τ between targets' costs ({args.n} architectures)", "",
          f"`tools/bench/cross_target.py --n {args.n} --seed {args.seed}{' --quick' if args.quick else ''}` on "
          f"{doc['machine']['date']}: "
          f"`sample_architectures({args.n}, seed={args.seed})` ({int(groups['nb201'].sum())} NAS-Bench-201 cells at "
          f"C = 16/32/64, 32x32; {int(groups['mbv2'].sum())} MobileNetV2-like nets, 96-224 px), after `canonicalize`, "
          "priced by `hwnas.backends.cost.estimate` (analytical models). τ is Kendall's τ-b (scipy); 1 means the "
          "two targets rank every pair of networks alike.", "",
          "| target | kind | median latency | median energy | fits |", "|---|---|---|---|---|"]
    for t in names:
        lat, en = costs[t]["latency"], costs[t]["energy"]
        if not np.isfinite(lat).any():
            md.append(f"| {t} | {targets[t].kind} | failed | failed | - |")
            continue
        md.append(f"| {t} | {targets[t].kind} | {format_seconds(float(np.nanmedian(lat)))} | "
                  f"{format_joules(float(np.nanmedian(en)))} | {int(costs[t]['fits'].sum())}/{args.n} |")
    for group, mask in groups.items():
        for metric in METRICS:
            md += ["", f"## Kendall τ, {metric}, {group} ({int(mask.sum())} architectures)", "",
                   markdown_matrix(names, result["taus"][group][metric])]
    for metric in METRICS:
        md += ["", f"## Overlap of the {k} cheapest ({TOP_FRACTION:.0%}) architectures by {metric}", "",
               "Row target's top set, share also in the column target's.", "",
               markdown_matrix(names, result["top_overlap"][metric], "{:.2f}")]
    out_md = write_markdown(args.out, "cross_target", "\n".join(md) + "\n")

    wrote = [out_json, out_md]
    panels = [("Kendall τ, latency", result["taus"]["all"]["latency"], -1.0, 1.0),
              ("Kendall τ, energy", result["taus"]["all"]["energy"], -1.0, 1.0),
              (f"{TOP_FRACTION:.0%} fastest: overlap", result["top_overlap"]["latency"], 0.0, 1.0)]
    out_png = args.out / "cross_target.png"
    if not args.quick and heatmap(out_png, names, panels):  # matplotlib costs a quick run seconds for nothing
        wrote.append(out_png)
    console.print("wrote " + ", ".join(str(p) for p in wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
