"""The one rewrite engine behind every pattern pass: copy a graph node by node into a new builder, letting a
pattern replace a node (typically at the *consumer* of a pattern: the ReLU after a convolution), then drop what no
output needs. Producers left without users by a rewrite simply die in the final pruning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cnncc.ir import Graph, GraphBuilder, Node, Value, ValueKind
from cnncc.passmanager import PassContext


class Rewriter:
    """Builds the rewritten graph; ``value(old)`` is the new value standing for an old one."""

    def __init__(self, graph: Graph, ctx: PassContext) -> None:
        self.old, self.ctx = graph, ctx
        self.b = GraphBuilder(graph.name)
        self.map: dict[Value, Value] = {}
        self.users = graph.users()
        for v in graph.inputs:
            self.map[v] = self.b.input(v.name, v.shape, v.dtype, v.type.layout)
        for p in graph.params:
            self.map[p] = self.b.param(p.name, p.shape, p.dtype, p.trainable)
        self._names = {v.name for v in (*graph.inputs, *graph.params)}

    def value(self, old: Value) -> Value:
        return self.map[old]

    def replace(self, old: Value, new: Value) -> None:
        self.map[old] = new

    def copy(self, node: Node) -> None:
        outs = self.b.apply_multi(node.op, [self.map[v] for v in node.inputs], node.attrs, node.layer)
        for o, n in zip(node.outputs, outs, strict=True):
            self.map[o] = n

    def emit(self, op: str, inputs: list[Value], attrs: Any, layer: str) -> Value:
        return self.b.apply(op, inputs, attrs, layer)

    def new_param(self, name: str, array: np.ndarray, trainable: bool = False) -> Value:
        """Declare a new parameter (a folded constant) and bind its value in the context."""
        base, k = name, 1
        while name in self._names:
            k += 1
            name = f"{base}~{k}"
        self._names.add(name)
        self.ctx.params[name] = np.ascontiguousarray(array, dtype=np.float32)
        return self.b.param(name, array.shape, "float32", trainable)

    def array(self, v: Value) -> np.ndarray | None:
        """The bound value of a parameter (new or old), or None for computed values."""
        if v.kind is not ValueKind.PARAM:
            return None
        return np.asarray(self.ctx.params[v.name], dtype=np.float64)

    def finish(self) -> Graph:
        for name, v in zip(self.old.output_names, self.old.outputs, strict=True):
            self.b.output(self.map[v], name)
        return prune(self.b.build())


def prune(graph: Graph) -> Graph:
    """Dead-code elimination: keep the nodes some output needs, and the parameters they read (inputs stay)."""
    live: set[int] = {id(v) for v in graph.outputs}
    keep: list[Node] = []
    for node in reversed(graph.nodes):
        if any(id(o) in live for o in node.outputs):
            keep.append(node)
            live.update(id(v) for v in node.inputs)
    if len(keep) == len(graph.nodes) and all(id(p) in live for p in graph.params):
        return graph
    keep.reverse()
    params = [p for p in graph.params if id(p) in live]
    return Graph(graph.name, graph.inputs, params, keep, graph.outputs, graph.output_names)


def rewrite(graph: Graph, ctx: PassContext, pattern: Callable[[Node, Rewriter], bool]) -> Graph:
    """Apply ``pattern`` to every node in order; it returns True when it emitted the node's replacement."""
    rw = Rewriter(graph, ctx)
    for node in graph.nodes:
        if not pattern(node, rw):
            rw.copy(node)
    return rw.finish()


def rewrite_noting(graph: Graph, ctx: PassContext, pattern: Callable[[Node, Rewriter], bool], pass_name: str,
                   message: str | None) -> tuple[Graph, int]:
    """:func:`rewrite`, counting the nodes the pattern replaced; a non-zero count is noted in ``ctx`` as
    ``message.format(n=count)`` (unless ``message`` is None). Returns the new graph and the count."""
    count = 0

    def counted(node: Node, rw: Rewriter) -> bool:
        nonlocal count
        done = pattern(node, rw)
        count += int(done)
        return done

    out = rewrite(graph, ctx, counted)
    if count and message is not None:
        ctx.note(pass_name, message.format(n=count))
    return out, count


def single_user(rw: Rewriter, v: Value) -> bool:
    """``v`` is read by exactly one node and is not a graph output."""
    return len(rw.users.get(v, [])) == 1 and all(v is not o for o in rw.old.outputs)
