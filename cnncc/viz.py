"""Pictures of a model's graph: ``cnncc viz`` writes Graphviz DOT, SVG (through Graphviz's ``dot``) or one HTML page.

The graph is the model's DSL graph taken through the CPU inference pipeline up to a named pass (``after``: ``none``
for the DSL graph, a pass name, or ``all``). Every node shows its layer, its op (a fused op with its epilogue, e.g.
``fused_conv2d + add + relu``) and its output shape; when the graph lowers for this CPU, also the convolution
algorithm the lowering chose (``direct``, ``depthwise``), the physical layout of the output (blocked ``NCHW16c`` or
plain) and its place in the planned arena. Nodes whose layer names share a dotted prefix (``layer1.0.conv1``,
``layer1.0.conv2``) are drawn inside one cluster, at most two levels deep.

The DOT text is written here by hand (no graphviz Python package). The CPU backend is imported lazily, only to
read placements and arena offsets: importing this module imports no backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncc.errors import CnnccError
from cnncc.ir import Graph, Layout, Value, ValueKind
from cnncc.ir.printer import format_attrs
from cnncc.ops.registry import Category, all_ops

FORMATS = ("dot", "svg", "html")
MAX_CLUSTER_DEPTH = 2

# op kind (an op's ``OpTraits.category``) -> (fill colour, legend text)
KINDS: dict[str, tuple[str, str]] = {
    "conv": ("#cfe2ff", "convolution"),
    "linear": ("#e2d5f8", "linear"),
    "pool": ("#d3f0d3", "pooling"),
    "act": ("#ffe2bf", "activation"),
    "binary": ("#fff2a8", "add / multiply / concat"),
    "norm": ("#f9d3e0", "normalization / dropout"),
    "shape": ("#e4e7eb", "reshape / layout"),
    "head": ("#f6c9c9", "softmax / loss"),
    "io": ("#ffffff", "graph input / output"),
}


def op_kind(op: str) -> str:
    """The colour key of ``op``: its category; the other ops (backward, optimiser, helpers) are drawn as shape ops."""
    opdef = all_ops().get(op)
    category = Category.OTHER if opdef is None else opdef.traits.category
    return "shape" if category is Category.OTHER else category.value


def fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f}".removesuffix(".0") + " KiB"
    return f"{n / 1024 / 1024:.2f} MiB"


def fmt_shape(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape)) if shape else "scalar"


@dataclass
class VNode:
    """One drawn box: a graph node, a graph input or a graph output."""

    id: str
    layer: str
    op: str  # with the epilogue of a fused op
    shape: str
    kind: str
    algorithm: str = ""
    layout: str = ""
    place: str = ""  # "arena", "input", "output" (the buffer's space)
    offset: int = -1
    nbytes: int = 0
    detail: str = ""  # the op's attributes as the IR prints them (tooltip, HTML table)
    inputs: list[str] = field(default_factory=list)


@dataclass
class VEdge:
    src: str
    dst: str
    residual: bool = False  # the operand of an epilogue ``add`` step


@dataclass
class Cluster:
    prefix: str
    nodes: list[str] = field(default_factory=list)
    children: list[Cluster] = field(default_factory=list)


@dataclass
class View:
    """Everything a picture shows, independent of the output format."""

    model: str
    after: str
    stage: str  # a sentence: which passes ran
    batch: int
    nodes: list[VNode]
    edges: list[VEdge]
    clusters: list[Cluster]
    graph_nodes: int
    arena_bytes: int | None = None
    vector_width: int | None = None
    note: str = ""  # why there is no physical information, if there is none
    pass_log: list[str] = field(default_factory=list)


# -- building the view -----------------------------------------------------------------------------------------------
def _pipeline() -> list[Any]:
    """What ``cnncc.compile`` runs: the CPU inference pipeline, then the choice of each conv's algorithm."""
    from cnncc.driver import conv_selection
    from cnncc.passes import cpu_inference

    return [*cpu_inference(), conv_selection()]


def pipeline_names() -> list[str]:
    from cnncc.passes import cpu_inference

    return [p.name for p in cpu_inference()] + ["select-algorithms"]


def stage_names() -> list[str]:
    """What ``after`` accepts: none, each pass of the CPU inference pipeline, all."""
    return ["none", *pipeline_names(), "all"]


def optimized_graph(graph: Graph, params: Mapping[str, np.ndarray], after: str = "all"
                    ) -> tuple[Graph, dict[str, np.ndarray], str, list[str]]:
    """``graph`` after the pass ``after`` of the CPU inference pipeline; returns graph, weights, a description of
    the stage and the passes' log."""
    from cnncc.passmanager import PassContext, run_passes

    names = pipeline_names()
    if after not in ("none", "all", *names):
        raise CnnccError(f"unknown pass '{after}' for --after; valid names: {', '.join(stage_names())}")
    if after == "none":
        return graph, dict(params), "the DSL graph, before any pass", []
    upto = len(names) if after == "all" else names.index(after) + 1
    ctx = PassContext(dict(params))
    out = run_passes(graph, _pipeline()[:upto], ctx)
    what = ("after the whole CPU inference pipeline" if upto == len(names)
            else f"after {after} (pass {upto} of {len(names)} of the CPU inference pipeline)")
    return out, ctx.params, what, ctx.log


def op_text(node: Any) -> str:
    steps = getattr(node.attrs, "epilogue", None)
    if isinstance(steps, tuple) and steps:
        return " + ".join([node.op, *(str(s) for s in steps)])
    return str(node.op)


def _residual_operands(node: Any) -> set[int]:
    """Operand positions read by epilogue ``add`` steps (fused ops: x, w, b, then the residuals)."""
    steps = getattr(node.attrs, "epilogue", None)
    if isinstance(steps, tuple) and any(getattr(s, "op", "") == "add" for s in steps):
        return set(range(3, len(node.inputs)))
    return set()


def _layout_text(p: Any, v: Value) -> str:
    """The physical layout of a placed value: blocked NCHW{W}c, or plain in the value's logical axis order."""
    if p.blocked:
        text = f"NCHW{p.addr.cb}c"
    elif len(v.shape) == 4 and v.type.layout in (Layout.NCHW, Layout.NHWC):
        text = f"plain {v.type.layout.value}"
    else:
        text = "plain"
    if any(p.halo):
        text += " +halo"
    return text


@dataclass
class _Physical:
    placed: dict[Value, Any]
    algorithm: dict[Value, str]
    arena_bytes: int
    width: int


def physical(graph: Graph, params: Mapping[str, np.ndarray]) -> _Physical:
    """Lower ``graph`` for this CPU and plan the arena (the CPU backend, imported here only)."""
    from cnncc import driver

    selected, program, _ = driver.lower_and_plan(graph, params)
    # Selection writes each conv's algorithm into a copy of the graph, node for node: read its placements back
    # onto this graph's values by position.
    same = {new: old for a, b in zip(graph.nodes, selected.nodes, strict=True)
            for old, new in zip(a.outputs, b.outputs, strict=True)}
    same.update(zip(selected.inputs, graph.inputs, strict=True))
    placed = {same.get(v, v): p for v, p in program.placed.items()}
    writer: dict[int, list[str]] = {}
    for call in program.calls:
        for buf in call.writes:
            writer.setdefault(id(buf), []).append(call.kernel)
    algorithm: dict[Value, str] = {}
    for node in graph.nodes:
        if all_ops()[node.op].traits.category is Category.CONV and node.layer in program.algorithms:
            algorithm[node.outputs[0]] = program.algorithms[node.layer]  # what the lowering emitted
            continue
        for v in node.outputs:
            p = placed.get(v)
            if p is None:
                continue
            for kernel in writer.get(id(p.buffer), ()):
                if kernel.startswith("conv_"):
                    algorithm[v] = kernel.removeprefix("conv_")
    return _Physical(placed, algorithm, program.arena_bytes, program.vector_width)


def _clusters(layers: dict[str, str]) -> list[Cluster]:
    """Nest node ids by dotted layer prefix: a prefix shared by 2+ nodes is a cluster, unless it holds exactly the
    nodes of its parent cluster; at most ``MAX_CLUSTER_DEPTH`` levels."""
    members: dict[str, list[str]] = {}
    for nid, layer in layers.items():
        parts = layer.split(".")
        for k in range(1, len(parts)):
            members.setdefault(".".join(parts[:k]), []).append(nid)
    chosen: dict[str, int] = {}  # prefix -> depth
    for prefix in sorted(members, key=lambda p: p.count(".")):
        ids = members[prefix]
        if len(ids) < 2:
            continue
        parent = max((q for q in chosen if prefix.startswith(q + ".")), key=len, default=None)
        depth = chosen[parent] + 1 if parent is not None else 1
        if parent is not None and set(members[parent]) == set(ids):
            continue
        if depth > MAX_CLUSTER_DEPTH:
            continue
        chosen[prefix] = depth
    clusters = {p: Cluster(p) for p in chosen}
    roots: list[Cluster] = []
    for p in sorted(chosen, key=lambda q: (q.count("."), q)):
        parent = max((q for q in chosen if p.startswith(q + ".")), key=len, default=None)
        (clusters[parent].children if parent is not None else roots).append(clusters[p])
    for nid, layer in layers.items():
        home = max((q for q in chosen if layer.startswith(q + ".")), key=len, default=None)
        if home is not None:
            clusters[home].nodes.append(nid)
    return roots


def build_view(model: Any, after: str = "all", batch: int = 1, lower: bool = True) -> View:
    """The picture's content for a DSL model (``lower=False`` skips layouts and arena offsets)."""
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise CnnccError(f"viz: batch must be a positive integer, got {batch!r}")
    graph, params, stage, log = optimized_graph(model.graph(batch), model.params, after)
    phys: _Physical | None = None
    note = ""
    if lower:
        try:
            phys = physical(graph, params)
        except CnnccError as e:
            note = f"no CPU lowering for this graph, so no layouts or arena offsets: {e}"
    names: dict[Value, str] = {}
    nodes: list[VNode] = []
    edges: list[VEdge] = []

    def fill(vn: VNode, v: Value) -> None:
        if phys is None:
            return
        p = phys.placed.get(v)
        if p is None:
            return
        vn.layout = _layout_text(p, v)
        vn.place = p.buffer.space.value
        vn.offset, vn.nbytes = p.buffer.offset, p.buffer.nbytes
        vn.algorithm = phys.algorithm.get(v, "")

    for i, v in enumerate(graph.inputs):
        vn = VNode(f"in{i}", v.name, "input", fmt_shape(v.shape), "io", detail=str(v.type))
        fill(vn, v)
        nodes.append(vn)
        names[v] = vn.id
    for i, node in enumerate(graph.nodes):
        out = node.outputs[0] if node.outputs else None
        shapes = ", ".join(fmt_shape(o.shape) for o in node.outputs)
        vn = VNode(f"n{i}", node.layer, op_text(node), shapes, op_kind(node.op),
                   detail=f"{node.op}{format_attrs(node.attrs)} : " + ", ".join(str(o.type) for o in node.outputs))
        if out is not None:
            fill(vn, out)
        residual = _residual_operands(node)
        for k, v in enumerate(node.inputs):
            if v.kind is ValueKind.PARAM:
                continue
            if v in names:
                edges.append(VEdge(names[v], vn.id, k in residual))
                vn.inputs.append(names[v])
        for o in node.outputs:
            names[o] = vn.id
        nodes.append(vn)
    for i, (name, v) in enumerate(zip(graph.output_names, graph.outputs, strict=True)):
        vn = VNode(f"out{i}", name, "output", fmt_shape(v.shape), "io", place="output", detail=str(v.type))
        if phys is not None and v in phys.placed:
            vn.layout = "plain"
        if v in names:
            edges.append(VEdge(names[v], vn.id))
            vn.inputs.append(names[v])
        nodes.append(vn)
    clusters = _clusters({f"n{i}": n.layer for i, n in enumerate(graph.nodes)})
    return View(model=graph.name, after=after, stage=stage, batch=batch, nodes=nodes, edges=edges,
                clusters=clusters, graph_nodes=len(graph.nodes),
                arena_bytes=phys.arena_bytes if phys else None, vector_width=phys.width if phys else None,
                note=note, pass_log=log)


# -- DOT -------------------------------------------------------------------------------------------------------------
def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise CnnccError(f"cannot tell the picture format of '{path}': name the output file .dot (Graphviz text), "
                         ".svg (needs Graphviz) or .html (one self-contained page)")
    return suffix


def render(view: View, fmt: str) -> str:

    if fmt == "dot":
        return to_dot(view)
    if fmt == "svg":
        return dot_to_svg(to_dot(view))
    if fmt == "html":
        return to_html(view, dot_to_svg(to_dot(view)) if have_dot() else None)
    raise CnnccError(f"unknown picture format '{fmt}'; formats: {', '.join(FORMATS)}")


def visualize(spec: str, output: str | None = None, after: str = "all", batch: int = 1) -> str:
    """``cnncc viz``: load the model ``spec``, draw it and write ``output`` (DOT text is returned when None)."""
    from cnncc.loader import load_model

    fmt = output_format(output) if output is not None else "dot"
    if fmt == "svg":
        from cnncc.viz_dot import _dot_program

        _dot_program()  # the "install Graphviz" error comes before any work
    view = build_view(load_model(spec), after, batch)
    text = render(view, fmt)
    if output is not None:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as e:
            raise CnnccError(f"cannot write '{output}': {e}") from e
    return text


__all__ = ["FORMATS", "View", "build_view", "dot_to_svg", "have_dot", "output_format", "render", "stage_names",
           "to_dot", "visualize"]


def to_html(view: View, svg: str | None = None) -> str:
    """The self-contained HTML page (see :mod:`cnncc.viz_html`)."""
    from cnncc.viz_html import to_html as html_page

    return html_page(view, svg)


def to_dot(view: View) -> str:
    """The DOT text of ``view`` (see :mod:`cnncc.viz_dot`)."""
    from cnncc.viz_dot import to_dot as dot_text

    return dot_text(view)


def have_dot() -> bool:
    from cnncc.viz_dot import have_dot as found

    return found()


def dot_to_svg(dot: str) -> str:
    from cnncc.viz_dot import dot_to_svg as convert

    return convert(dot)
