"""DOT rendering of a ``cnncc viz`` view (written by hand: no graphviz Python package), and SVG through
Graphviz's ``dot`` program when it is installed."""

from __future__ import annotations

import html
import shutil
import subprocess

from cnncc.errors import CnnccError
from cnncc.viz import KINDS, Cluster, View, VNode, fmt_bytes


def _q(s: str) -> str:
    """A DOT quoted string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _h(s: str) -> str:
    """Text inside a DOT HTML-like label."""
    return html.escape(s, quote=True)


def _place_text(n: VNode, exact: bool = False) -> str:
    if n.place == "arena" and n.offset >= 0:
        if exact:
            return f"arena @{n.offset:,} ({n.nbytes:,} B)"
        return f"arena {fmt_bytes(n.nbytes)} @ {n.offset:,}"
    if n.place in ("input", "output"):
        return f"caller's {n.place} array"
    return ""


def _node_label(n: VNode) -> str:
    rows = [f'<B>{_h(n.layer)}</B>']
    if n.kind == "io":
        rows.append(f'<FONT POINT-SIZE="10">graph {_h(n.op)} · {_h(n.shape)}</FONT>')
    else:
        rows.append(_h(n.op))
        rows.append(f'<FONT POINT-SIZE="10">{_h(n.shape)}</FONT>')
    extra = " · ".join(x for x in (n.algorithm, n.layout) if x)
    if extra:
        rows.append(f'<FONT POINT-SIZE="10" COLOR="#1f3b73">{_h(extra)}</FONT>')
    place = _place_text(n)
    if place and n.kind != "io":
        rows.append(f'<FONT POINT-SIZE="9" COLOR="#555555">{_h(place)}</FONT>')
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            + "".join(f"<TR><TD>{r}</TD></TR>" for r in rows) + "</TABLE>>")


def _header_label(view: View) -> str:
    kinds = [k for k in KINDS if k != "io" and any(n.kind == k for n in view.nodes)]
    title = f'<FONT POINT-SIZE="18"><B>{_h(view.model)}</B></FONT>'
    facts = [view.stage, f"{view.graph_nodes} nodes", f"batch {view.batch}"]
    if view.arena_bytes is not None:
        facts.append(f"arena {fmt_bytes(view.arena_bytes)} ({view.arena_bytes:,} B)")
    swatches = "".join(f'<TD BGCOLOR="{KINDS[k][0]}" BORDER="1">{_h(KINDS[k][1])}</TD>' for k in kinds)
    if any(e.residual for e in view.edges):
        swatches += '<TD><FONT COLOR="#b05a00">- - &#8594; residual (epilogue add)</FONT></TD>'
        kinds.append("residual")
    rows = [f"<TR><TD COLSPAN=\"{max(len(kinds), 1)}\">{title}</TD></TR>",
            f'<TR><TD COLSPAN="{max(len(kinds), 1)}">{_h(" · ".join(facts))}</TD></TR>']
    if view.note:
        rows.append(f'<TR><TD COLSPAN="{max(len(kinds), 1)}"><FONT COLOR="#a04000">{_h(view.note)}</FONT></TD></TR>')
    if swatches:
        rows.append(f"<TR>{swatches}</TR>")
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="4" CELLPADDING="3">' + "".join(rows) + "</TABLE>>")


def to_dot(view: View) -> str:
    """The view as a Graphviz digraph; one statement per line."""
    lines = [f"digraph {_q(view.model)} {{",
             f'  graph [rankdir=TB, fontname="Helvetica", fontsize=12, labelloc=t, labeljust=c, nodesep=0.35, '
             f'ranksep=0.3, newrank=true, label={_header_label(view)}];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, color="#4a4a4a", '
             'penwidth=1.0, margin="0.12,0.05"];',
             '  edge [color="#5a5a5a", arrowsize=0.7, penwidth=1.1];']
    by_id = {n.id: n for n in view.nodes}
    in_cluster: set[str] = set()

    def collect(c: Cluster) -> None:
        in_cluster.update(c.nodes)
        for ch in c.children:
            collect(ch)

    for c in view.clusters:
        collect(c)

    def node_stmt(n: VNode, indent: str) -> str:
        attrs = [f"label={_node_label(n)}", f'fillcolor="{KINDS[n.kind][0]}"', f"tooltip={_q(n.detail)}"]
        if n.kind == "io":
            attrs += ["shape=box", 'style="rounded,bold"', "penwidth=1.6"]
        return f"{indent}{n.id} [{', '.join(attrs)}];"

    counter = iter(range(10**9))

    def cluster_lines(c: Cluster, depth: int) -> list[str]:
        ind = "  " * (depth + 1)
        fill = "#f5f7fa" if depth == 1 else "#e9eef5"
        out = [f"{ind}subgraph cluster_{next(counter)} {{",
               f'{ind}  graph [label={_q(c.prefix)}, style="rounded,filled", fillcolor="{fill}", color="#9aa5b1", '
               f'fontsize=13, fontname="Helvetica-Bold", labeljust=l, margin=10];']
        for ch in c.children:
            out += cluster_lines(ch, depth + 1)
        out += [node_stmt(by_id[nid], ind + "  ") for nid in c.nodes]
        out.append(f"{ind}}}")
        return out

    ins = [n for n in view.nodes if n.id.startswith("in")]
    outs = [n for n in view.nodes if n.id.startswith("out")]
    for n in view.nodes:
        if n.id not in in_cluster and n not in outs:
            lines.append(node_stmt(n, "  "))
    for c in view.clusters:
        lines += cluster_lines(c, 1)
    for n in outs:
        lines.append(node_stmt(n, "  "))
    if len(ins) > 1:
        lines.append("  { rank=source; " + " ".join(n.id for n in ins) + " }")
    for e in view.edges:
        style = ' [style=dashed, color="#b05a00", tooltip="residual (epilogue add)"]' if e.residual else ""
        lines.append(f"  {e.src} -> {e.dst}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- SVG and HTML ----------------------------------------------------------------------------------------------------
def have_dot() -> bool:
    return shutil.which("dot") is not None


def _dot_program() -> str:
    exe = shutil.which("dot")
    if exe is None:
        raise CnnccError("SVG output needs Graphviz's `dot` program, which is not installed: install Graphviz "
                         "(Debian/Ubuntu package `graphviz`) or write .dot or .html instead")
    return exe


def dot_to_svg(dot: str) -> str:
    """Render DOT text with Graphviz's ``dot -Tsvg``."""
    exe = _dot_program()
    try:
        done = subprocess.run([exe, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CnnccError(f"Graphviz dot failed: {e}") from e
    if done.returncode != 0:
        raise CnnccError(f"Graphviz dot failed (exit {done.returncode}): {done.stderr.strip()[:2000]}")
    return done.stdout
