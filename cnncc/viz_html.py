"""The self-contained HTML view of ``cnncc viz``: a header, the SVG inlined when Graphviz made one, and always a
table of the nodes (no network, no external scripts or styles)."""

from __future__ import annotations

import html
import re

from cnncc.viz import KINDS, Cluster, View, fmt_bytes
from cnncc.viz_dot import _place_text


def _inline_svg(svg: str) -> str:
    """Graphviz SVG as an element of an HTML5 page: no XML prolog, doctype or namespace URLs."""
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    return svg


_CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
header h1 { margin: 0 0 .2em 0; font-size: 1.6em; }
header p { margin: .2em 0; color: #444; }
.graph { overflow: auto; border: 1px solid #ccd; padding: .5em; margin: 1em 0; background: #fff; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ccd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #a04000; }
ul.log { color: #444; font-size: .9em; }
.legend span { display: inline-block; padding: .1em .5em; margin-right: .3em; border: 1px solid #999;
  border-radius: 3px; font-size: .85em; }
"""


def to_html(view: View, svg: str | None = None) -> str:
    """One self-contained page: header, the SVG inlined (when given), and a table of the nodes."""
    e = html.escape
    facts = [f"--after {view.after}: {view.stage}", f"{view.graph_nodes} nodes", f"batch {view.batch}"]
    if view.arena_bytes is not None:
        facts.append(f"arena {fmt_bytes(view.arena_bytes)} ({view.arena_bytes:,} bytes)")
    if view.vector_width is not None:
        facts.append(f"CPU vector width {view.vector_width} floats")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>cnncc viz: {e(view.model)} ({e(view.after)})</title>", f"<style>{_CSS}</style>", "</head>",
             "<body>", "<header>", f"<h1>{e(view.model)}</h1>", f"<p>{e(' · '.join(facts))}</p>"]
    if view.note:
        parts.append(f'<p class="note">{e(view.note)}</p>')
    kinds = [k for k in KINDS if any(n.kind == k for n in view.nodes)]
    parts.append('<p class="legend">' + "".join(
        f'<span style="background:{KINDS[k][0]}">{e(KINDS[k][1])}</span>' for k in kinds) + "</p>")
    if view.pass_log:
        parts.append('<ul class="log">' + "".join(f"<li>{e(x)}</li>" for x in view.pass_log) + "</ul>")
    parts.append("</header>")
    if svg is not None:
        parts.append(f'<div class="graph">{_inline_svg(svg)}</div>')
    else:
        parts.append('<p class="note">Graphviz (`dot`) is not installed, so this page has no drawing; install the '
                     "Graphviz package to get one. The nodes follow in graph order.</p>")
    layer_of = {n.id: n.layer for n in view.nodes}
    group: dict[str, str] = {}

    def walk(c: Cluster) -> None:
        for nid in c.nodes:
            group[nid] = c.prefix
        for ch in c.children:
            walk(ch)

    for c in view.clusters:
        walk(c)
    parts.append("<table>")
    parts.append("<tr><th>#</th><th>group</th><th>layer</th><th>op</th><th>output shape</th><th>algorithm</th>"
                 "<th>layout</th><th>memory</th><th>inputs</th><th>attributes</th></tr>")
    for i, n in enumerate(view.nodes):
        parts.append(
            f'<tr style="background:{KINDS[n.kind][0]}"><td class="num">{i}</td><td>{e(group.get(n.id, ""))}</td>'
            f"<td><b>{e(n.layer)}</b></td><td>{e(n.op)}</td><td>{e(n.shape)}</td><td>{e(n.algorithm)}</td>"
            f"<td>{e(n.layout)}</td><td>{e(_place_text(n, exact=True))}</td>"
            f"<td>{e(', '.join(layer_of[x] for x in n.inputs))}</td><td><code>{e(n.detail)}</code></td></tr>")
    parts += ["</table>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


# -- the command -----------------------------------------------------------------------------------------------------
