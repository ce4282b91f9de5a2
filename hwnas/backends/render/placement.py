"""The crossbar placement of an analog report's page (`map-analog`'s Placement annotations): a
tile map, one square per tile coloured by the layer on it and shaded by how full it is, and a
table of each weight layer's tiles and blocks, or the reason it stays digital."""

from __future__ import annotations

from html import escape

from hwnas.backends.cost.report import CostReport, Resource
from hwnas.ir.graph import Graph

SQUARE, GAP, PER_ROW = 22, 3, 16


def _hue(i: int) -> int:
    return (i * 137) % 360  # golden-angle steps: neighbouring layers get distinct hues


def tile_map_svg(graph: Graph, chip_tiles: int) -> str:
    """One square per tile (the chip's, and any placed beyond them outlined in red); a tile's
    colour names its layer, its opacity the share of its cells the layer's blocks fill."""
    owner: dict[int, tuple[int, str, float]] = {}
    for i, n in enumerate(n for n in graph.nodes if n.ann.placement is not None and n.ann.placement.analog):
        p = n.ann.placement
        assert p is not None
        cells = (p.tile_rows or 1) * (p.tile_cols or 1)
        for t in p.tile_ids:
            used = sum((b[2] - b[1]) * (b[4] - b[3]) for b in p.blocks if b[0] == t)
            owner[t] = (i, n.name, used / cells)
    count = max([chip_tiles, *(t + 1 for t in owner)])
    rows = (count + PER_ROW - 1) // PER_ROW
    squares = []
    for t in range(count):
        x, y = (t % PER_ROW) * (SQUARE + GAP), (t // PER_ROW) * (SQUARE + GAP)
        over = ' stroke="#b00020" stroke-width="2"' if t >= chip_tiles else ' stroke="#ccc"'
        if t in owner:
            i, name, use = owner[t]
            fill = f'fill="hsl({_hue(i)},65%,50%)" fill-opacity="{0.25 + 0.75 * use:.2f}"'
            title = f"tile {t}: {name}, {use:.0%} of its cells"
        else:
            fill, title = 'fill="#f4f4f4"', f"tile {t}: free"
        squares.append(f'<rect x="{x}" y="{y}" width="{SQUARE}" height="{SQUARE}" {fill}{over}>'
                       f"<title>{escape(title)}</title></rect>")
    w, h = PER_ROW * (SQUARE + GAP), rows * (SQUARE + GAP)
    return f'<svg id="tiles" width="{w}" height="{h}" viewBox="0 0 {w} {h}">{"".join(squares)}</svg>'


def placement_html(graph: Graph, report: CostReport) -> str:
    """The placement section of the page: the tile map and table, a pointer to map-analog on an
    analog report of a graph without placements, '' otherwise."""
    placed = [n for n in graph.nodes if n.ann.placement is not None]
    if not placed:
        return ("<h2>Crossbar placement</h2><p>No layer carries a placement: run the pass map-analog "
                "(<code>-p canonicalize,map-analog</code>) for tile ids and blocks; the tile counts above are the "
                "cost model's own.</p>") if report.kind == "analog" else ""
    tiles = report.resources.get("tiles")
    chip = int(tiles.available) if isinstance(tiles, Resource) else 0
    rows = []
    for n in placed:
        p = n.ann.placement
        assert p is not None
        if p.analog:
            ids = ", ".join(map(str, p.tile_ids)) if len(p.tile_ids) <= 8 else \
                f"{p.tile_ids[0]}–{p.tile_ids[-1]}"
            extent = f"{max((b[2] for b in p.blocks), default=0)} × {max((b[4] for b in p.blocks), default=0)}"
            where = (f"{p.tiles} tiles of {p.tile_rows}×{p.tile_cols}: {ids}; matrix {extent} in "
                     f"{len(p.blocks)} blocks")
        else:
            where = f"digital: {p.reason or 'placed on the digital core'}"
        rows.append(f"<tr><td>{escape(n.name)}</td><td>{escape(n.op)}</td>"
                    f'<td class="{"" if p.analog else "bad"}">{escape(where)}</td></tr>')
    return ('<h2>Crossbar placement</h2><p>Each square is a tile (hover for its layer); a red outline is a tile '
            f"beyond the chip's {chip}.</p>" + tile_map_svg(graph, chip)
            + '<table id="placement"><thead><tr><th>node</th><th>op</th><th>placement</th></tr></thead>'
            + f'<tbody>{"".join(rows)}</tbody></table>')
