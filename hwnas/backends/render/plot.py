"""Per-layer latency and energy bars, one bar per target in each layer's group, as a PNG.

Drawn on a bare Agg canvas (no pyplot), so it needs no display and leaves no global
figure state behind; the file is written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from hwnas.backends.cost.report import CostReport
from hwnas.backends.render import HIDDEN_BOUNDS

# Above this ratio between the largest and smallest bar, a linear axis shows only the largest.
LOG_RATIO = 100.0


def all_layers(reports: Sequence[CostReport]) -> list[str]:
    """Every node name in the reports, in execution order (first report's order first)."""
    names: list[str] = []
    seen: set[str] = set()
    for r in reports:
        for c in r.nodes:
            if c.node not in seen:
                seen.add(c.node)
                names.append(c.node)
    return names


def plotted_layers(reports: Sequence[CostReport], show_all: bool = False) -> list[str]:
    """Node names in execution order that cost something on at least one target."""
    names = all_layers(reports)
    if show_all:
        return names
    by = [{c.node: c for c in r.nodes} for r in reports]
    return [n for n in names if any(n in b and b[n].bound not in HIDDEN_BOUNDS and b[n].latency_s is not None
                                     for b in by)]


def plot_png(reports: Sequence[CostReport], title: str = "", show_all: bool = False) -> bytes:
    """The PNG bytes of the latency and energy bars of `plotted_layers`; a log axis when the
    bars span more than `LOG_RATIO`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = plotted_layers(reports, show_all)
    index = {name: i for i, name in enumerate(all_layers(reports))}  # the numbers `hwnas cost` prints
    by = [{c.node: c for c in r.nodes} for r in reports]
    ops = {c.node: c.op for r in reports for c in r.nodes}
    width_in = min(40.0, max(8.0, 0.12 * len(names) * max(2, len(reports))))
    fig = Figure(figsize=(width_in, 8.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    bar_w = 0.8 / max(1, len(reports))
    xs = list(range(len(names)))
    for ax, field, unit in ((axes[0], "latency_s", "latency (s)"), (axes[1], "energy_j", "energy (J)")):
        values = [[(getattr(b[n], field) or 0.0) if n in b else 0.0 for n in names] for b in by]
        for k, (r, v) in enumerate(zip(reports, values, strict=True)):
            ax.bar([x + (k - (len(reports) - 1) / 2) * bar_w for x in xs], v, width=bar_w, label=r.target)
        positive = [x for v in values for x in v if x > 0]
        if positive and max(positive) / min(positive) > LOG_RATIO:
            ax.set_yscale("log")
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="upper right")
    if title:
        axes[0].set_title(title)
    step = max(1, len(names) // 120)  # at most about 120 readable tick labels
    axes[1].set_xticks(xs[::step])
    axes[1].set_xticklabels([f"{index[names[i]]} {ops[names[i]]}" for i in xs[::step]], rotation=90, fontsize=7)
    axes[1].set_xlabel("layer (execution order)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_plot(reports: Sequence[CostReport], path: Path, title: str = "", show_all: bool = False) -> None:
    """Write `plot_png` to `path` atomically."""
    from hwnas.files import write_atomic

    write_atomic(path, plot_png(reports, title, show_all))
