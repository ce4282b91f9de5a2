"""One self-contained HTML page of a cost report: the graph as an inline SVG coloured by
latency share, the totals, and per-layer bars.

Nothing is fetched when the page opens (no scripts, stylesheets, fonts or images from
elsewhere; the SVG is inline and needs no namespace URL), so the file can be mailed,
archived or opened offline. Hovering a node shows its cost through the SVG `<title>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from hwnas.backends.cost.report import Bound, CostReport, NodeCost, format_bytes, format_joules, format_seconds
from hwnas.backends.render import HIDDEN_BOUNDS, latency_shares, unpriced_text
from hwnas.backends.render.dot import heat, ink
from hwnas.backends.render.placement import placement_html
from hwnas.ir.graph import Graph, Node

BOX_W, BOX_H, COL, ROW, MARGIN = 190, 40, 210, 66, 20
IO_W, IO_H = 140, 26

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
th { border-bottom: 1px solid #ccc; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
#totals td:first-child { color: #666; } .bad { color: #b00020; } .ok { color: #0a7a2f; }
tr.hidden-bound { color: #999; } tr.unpriced td { background: #fff3b0; }
.track { display: inline-block; width: 240px; background: #f2f2f2; vertical-align: middle; }
.bar { display: block; height: 12px; background: #d62728; }
.graph { overflow: auto; border: 1px solid #ddd; max-height: 90vh; }
svg text { font: 11px system-ui, sans-serif; pointer-events: none; }
svg .node rect { stroke: #555; } svg .node.hidden-bound rect { stroke: #aaa; stroke-dasharray: 4 3; }
svg .node.unpriced rect { fill: #fff3b0; } svg .edge { fill: none; stroke: #999; }
svg .io ellipse { fill: #f4f4f4; stroke: #999; }
"""


@dataclass
class _Box:
    x: float
    y: float
    w: float
    h: float


def layer_layout(graph: Graph) -> dict[Node, tuple[int, float]]:
    """Node -> (layer, x centre). A node's layer is the longest path to it from a source,
    except that nodes computed from constants alone (shape arithmetic, ConstantOfShape) sit
    just above their first user instead of crowding the top row. Within a layer, nodes sit
    in the order of their predecessors' mean x (one barycentre sweep), which keeps most
    edges short without a real crossing minimiser."""
    import networkx as nx

    g = graph.nx()
    order = list(nx.topological_sort(g))
    depth: dict[Node, int] = {}
    for n in order:
        depth[n] = max((depth[p] + 1 for p in g.predecessors(n)), default=0)
    graph_inputs = {id(v) for v in graph.inputs}
    live: set[Node] = set()  # nodes that depend on a graph input
    for n in order:
        if any(v is not None and id(v) in graph_inputs for v in n.inputs) or any(p in live for p in g.predecessors(n)):
            live.add(n)
    for n in reversed(order):
        users = [depth[s] for s in g.successors(n)]
        if n not in live and users:
            depth[n] = max(depth[n], min(users) - 1)
    layers: dict[int, list[Node]] = {}
    for n in graph.nodes:
        layers.setdefault(depth[n], []).append(n)
    widest = max((len(v) for v in layers.values()), default=1)
    centre = MARGIN + widest * COL / 2
    index = {n: i for i, n in enumerate(graph.nodes)}
    pos: dict[Node, tuple[int, float]] = {}
    for layer in sorted(layers):
        members = layers[layer]

        def key(n: Node) -> tuple[float, int]:
            xs = [pos[p][1] for p in g.predecessors(n) if p in pos]
            return (sum(xs) / len(xs) if xs else centre, index[n])

        members.sort(key=key)
        for i, n in enumerate(members):
            pos[n] = (layer, centre + (i - (len(members) - 1) / 2) * COL)
    return pos


def _short(text: str, limit: int) -> str:
    """Keep the end of long names: '…/layer4.2/conv3/Conv' says more than its start."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _tooltip(n: Node, c: NodeCost | None, share: float) -> str:
    if c is None:
        return f"{n.name}\n{n.qualified_op}\nnot in the report"
    lines = [n.name, c.op, f"latency {format_seconds(c.latency_s)} ({100 * share:.1f}%)",
             f"energy {format_joules(c.energy_j)}", f"bytes {format_bytes(c.bytes_moved)}", f"bound {c.bound.value}"]
    if c.note:
        lines.append(c.note)
    return "\n".join(lines)


def _edge(a: _Box, b: _Box) -> str:
    x1, y1, x2, y2 = a.x + a.w / 2, a.y + a.h, b.x + b.w / 2, b.y
    dy = max(20.0, (y2 - y1) / 2)
    d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{y1 + dy:.0f} {x2:.0f},{y2 - dy:.0f} {x2:.0f},{y2:.0f}"
    return f'<path class="edge" d="{d}"/>'


def graph_svg(graph: Graph, report: CostReport) -> str:
    """The graph as boxes in layers (inputs on top, outputs at the bottom), one `<g class="node">` per node."""
    pos = layer_layout(graph)
    by_name = {c.node: c for c in report.nodes}
    shares = latency_shares(report)
    hottest = max(shares.values(), default=0.0)
    layers = 1 + max((layer for layer, _ in pos.values()), default=-1)
    boxes: dict[int, _Box] = {id(n): _Box(x - BOX_W / 2, MARGIN + ROW * (layer + 1), BOX_W, BOX_H)
                              for n, (layer, x) in pos.items()}
    width = max([MARGIN * 2 + BOX_W] + [b.x + BOX_W + MARGIN for b in boxes.values()])
    ins = {id(v): _Box(MARGIN + i * (IO_W + 20), MARGIN, IO_W, IO_H) for i, v in enumerate(graph.inputs)}
    out_y = MARGIN + ROW * (layers + 1)
    outs = {id(v): _Box(MARGIN + i * (IO_W + 20), out_y, IO_W, IO_H) for i, v in enumerate(graph.outputs)}
    width = max(width, MARGIN + max(len(ins), len(outs)) * (IO_W + 20))
    height = out_y + IO_H + MARGIN

    edges, shapes = [], []
    for n in graph.nodes:
        for v in n.inputs:
            if v is None:
                continue
            src = boxes.get(id(v.producer)) if v.producer is not None else ins.get(id(v))
            if src is not None:
                edges.append(_edge(src, boxes[id(n)]))
    for v in graph.outputs:
        src = boxes.get(id(v.producer)) if v.producer is not None else ins.get(id(v))
        if src is not None:
            edges.append(_edge(src, outs[id(v)]))
    for i, n in enumerate(graph.nodes):
        b, c = boxes[id(n)], by_name.get(n.name)
        share = shares.get(n.name, 0.0)
        cls, fill, text = "node", heat(share, hottest), ink(share, hottest)
        if c is not None and c.bound in HIDDEN_BOUNDS:
            cls, fill, text = "node hidden-bound", "#f4f4f4", "#777777"
        elif c is None or c.bound is Bound.UNPRICED:
            cls, fill, text = "node unpriced", "#fff3b0", "#222222"
        fused = f" +{n.ann.fused_activation.op}" if n.ann.fused_activation else ""
        shapes.append(
            f'<g class="{cls}" id="node-{i}" data-node="{escape(n.name)}" data-bound="{c.bound.value if c else ""}">'
            f"<title>{escape(_tooltip(n, c, share))}</title>"
            f'<rect x="{b.x:.0f}" y="{b.y:.0f}" width="{b.w:.0f}" height="{b.h:.0f}" rx="4" fill="{fill}"/>'
            f'<text x="{b.x + 6:.0f}" y="{b.y + 16:.0f}" fill="{text}" font-weight="600">'
            f"{escape(_short(n.qualified_op + fused, 28))}</text>"
            f'<text x="{b.x + 6:.0f}" y="{b.y + 31:.0f}" fill="{text}">{escape(_short(n.name, 28))}</text></g>')
    for kind, values, where in (("input", graph.inputs, ins), ("output", graph.outputs, outs)):
        for v in values:
            b = where[id(v)]
            shapes.append(
                f'<g class="io {kind}"><title>{escape(f"{kind} {v.name}: {v.type}")}</title>'
                f'<ellipse cx="{b.x + b.w / 2:.0f}" cy="{b.y + b.h / 2:.0f}" rx="{b.w / 2:.0f}" ry="{b.h / 2:.0f}"/>'
                f'<text x="{b.x + b.w / 2:.0f}" y="{b.y + 17:.0f}" text-anchor="middle">'
                f"{escape(_short(v.name, 22))}</text></g>")
    return (f'<svg id="graph" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">'
            + "".join(edges) + "".join(shapes) + "</svg>")


def totals_html(report: CostReport) -> str:
    """The report's totals, fit, resources and extra figures as a two-column table."""
    rows = [
        ("target", f"{report.target} ({report.kind}, {report.method})"),
        ("latency", format_seconds(report.latency_s)),
        ("energy", format_joules(report.energy_j)),
        ("peak memory", format_bytes(report.peak_memory_bytes)),
        ("weights", format_bytes(report.weight_bytes)),
    ]
    cells = "".join(f'<tr><td>{escape(k)}</td><td class="value">{escape(v)}</td></tr>' for k, v in rows)
    if report.fits:
        cells += '<tr><td>fits</td><td class="value ok">yes</td></tr>'
    else:
        reasons = "".join(f"<li>{escape(r)}</li>" for r in report.does_not_fit)
        cells += f'<tr><td>fits</td><td class="value bad">no<ul class="reasons">{reasons}</ul></td></tr>'
    unpriced = unpriced_text(report) + " (not in the totals)" if report.unpriced else "none"
    cells += f'<tr><td>unpriced ops</td><td class="value unpriced-ops">{escape(unpriced)}</td></tr>'
    for name, r in report.resources.items():
        used = format_bytes(r.used) if r.unit == "B" else f"{r.used:,.4g} {r.unit}".strip()
        avail = format_bytes(r.available) if r.unit == "B" else f"{r.available:,.4g} {r.unit}".strip()
        cells += (f'<tr><td>{escape(name)}</td><td class="value {"ok" if r.fits else "bad"}">'
                  f"{escape(used)} of {escape(avail)}</td></tr>")
    for name, x in report.extra.items():
        value = format_bytes(x) if name.endswith("_bytes") else f"{x:.6g}"
        cells += f'<tr><td>{escape(name)}</td><td class="value">{escape(value)}</td></tr>'
    return f'<table id="totals">{cells}</table>'


def layers_html(graph: Graph, report: CostReport) -> str:
    """One row per node with its latency share as a bar (scaled so the slowest node fills)."""
    shares = latency_shares(report)
    hottest = max(shares.values(), default=0.0)
    by_name = {c.node: c for c in report.nodes}
    in_graph = [n.name for n in graph.nodes]
    names = in_graph + [c.node for c in report.nodes if c.node not in set(in_graph)]
    head = "".join(f"<th>{h}</th>" for h in ("#", "node", "op", "latency", "energy", "bytes", "bound", "share"))
    rows = []
    for i, name in enumerate(names):
        c = by_name.get(name)
        if c is None:
            continue
        share = shares.get(name, 0.0)
        cls = "hidden-bound" if c.bound in HIDDEN_BOUNDS else "unpriced" if c.bound is Bound.UNPRICED else "priced"
        width = 0.0 if hottest <= 0 else 100 * share / hottest
        rows.append(
            f'<tr class="{cls}"><td class="num">{i}</td><td>{escape(name)}</td><td>{escape(c.op)}</td>'
            f'<td class="num">{escape(format_seconds(c.latency_s))}</td>'
            f'<td class="num">{escape(format_joules(c.energy_j))}</td>'
            f'<td class="num">{escape(format_bytes(c.bytes_moved))}</td><td>{escape(c.bound.value)}</td>'
            f'<td class="barcell"><span class="track"><span class="bar" style="width:{width:.1f}%"></span></span> '
            f"{100 * share:.1f}%</td></tr>")
    return f'<table id="layers"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_html(graph: Graph, report: CostReport) -> str:
    """The whole page (see the module docstring)."""
    title = f"{graph.name} on {report.target}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{len(graph.nodes)} nodes. Boxes are coloured by their share of the latency (white: none, red: "
        "the slowest node); dashed boxes are free or fused; yellow ones are unpriced. Hover a box for its cost.</p>",
        "<h2>Totals</h2>", totals_html(report),
        "<h2>Graph</h2>", f'<div class="graph">{graph_svg(graph, report)}</div>',
        "<h2>Layers</h2>", layers_html(graph, report),
        placement_html(graph, report),
        "</body></html>", "",
    ])
