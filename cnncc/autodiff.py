"""Reverse-mode automatic differentiation on the graph: :func:`grad` builds one graph that computes the forward
outputs and the gradients of a scalar loss.

Each op's vector-Jacobian product lives in its own module (``OpDef.vjp``, protocol in :mod:`cnncc.ops.registry`)
and is written with graph ops, so the backward graph is an ordinary graph: the reference interpreter runs it, the
passes rewrite it and the backends lower it like any forward graph.

The algorithm is the textbook one (Griewank & Walther, *Evaluating Derivatives*, ch. 3; Baydin et al., "Automatic
differentiation in machine learning: a survey", JMLR 2018): copy the forward nodes, seed the loss with 1, walk the
nodes in reverse topological order calling each VJP, and sum with ``add`` the gradients of a value that has several
users. Only nodes on a path from a differentiated value to the loss are visited, so a frozen part of a network (or
an op without a VJP that no gradient crosses) costs nothing and raises nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnncc.errors import CnnccError, GraphError
from cnncc.ir import Graph, GraphBuilder, Node, Value
from cnncc.ops import get_op

GRAD_PREFIX = "grad:"


class NoVjpError(CnnccError):
    """A gradient must flow through an op that has no vector-Jacobian product yet."""


class VjpContext:
    """What a VJP sees: the builder of the new graph, the map from forward values to its values, and helpers.

    Every node a VJP emits is tagged with the layer ``<forward layer>.grad``, so errors and printouts name the layer
    whose backward pass they belong to.
    """

    def __init__(self, builder: GraphBuilder, mapping: dict[Value, Value], needed: set[Value]) -> None:
        self.builder = builder
        self._map = mapping
        self._needed = needed
        self.layer = ""

    def needs_grad(self, v: Value) -> bool:
        """Whether forward value ``v`` needs a gradient (PyTorch's ``needs_input_grad``): a VJP may return ``None``
        for an input that does not, and so emit no dead nodes (the data input of the first linear layer)."""
        return v in self._needed

    def value(self, v: Value) -> Value:
        """The value of the new graph that holds forward value ``v``."""
        try:
            return self._map[v]
        except KeyError:
            raise GraphError(f"autodiff: {v!r} is not a value of the forward graph") from None

    def emit(self, op: str, inputs: Sequence[Value], attrs: Any = None) -> Value:
        """Apply a single-output ``op`` in the new graph (its shape rule runs at once)."""
        return self.builder.apply(op, inputs, attrs, layer=self._layer())

    def emit_multi(self, op: str, inputs: Sequence[Value], attrs: Any = None) -> tuple[Value, ...]:
        return self.builder.apply_multi(op, inputs, attrs, layer=self._layer())

    def _layer(self) -> str:
        return f"{self.layer}.grad" if self.layer else "grad"

    def fill_like(self, x: Value, value: float) -> Value:
        """A tensor of ``x``'s type filled with ``value``."""
        from cnncc.ops.fill_like import FillLikeAttrs

        return self.emit("fill_like", [x], FillLikeAttrs(float(value)))

    def zeros_like(self, x: Value) -> Value:
        return self.fill_like(x, 0.0)

    def ones_like(self, x: Value) -> Value:
        return self.fill_like(x, 1.0)

    def scale(self, x: Value, factor: float) -> Value:
        """``x * factor`` (a constant): ``multiply`` by a :meth:`fill_like`."""
        return self.emit("multiply", [x, self.fill_like(x, factor)])

    def sub(self, a: Value, b: Value) -> Value:
        """``a - b`` as ``a + (-1) * b`` (exact: the negation rounds nothing)."""
        return self.emit("add", [a, self.scale(b, -1.0)])

    def sum_to(self, g: Value, shape: Sequence[int]) -> Value:
        """``g`` summed over its broadcast axes down to ``shape`` (the VJP of broadcasting); ``g`` if equal."""
        from cnncc.ops.sum_to import SumToAttrs

        shape = tuple(shape)
        return g if g.shape == shape else self.emit("sum_to", [g], SumToAttrs(shape))


def _copy_forward(graph: Graph, b: GraphBuilder) -> dict[Value, Value]:
    mapping = b.copy_nodes(graph, b.copy_inputs(graph))
    for name, v in zip(graph.output_names, graph.outputs, strict=True):
        b.output(mapping[v], name)
    return mapping


def _loss(graph: Graph, loss_output: str | None) -> Value:
    if loss_output is None:
        if len(graph.outputs) != 1:
            raise GraphError(f"grad: graph '{graph.name}' has {len(graph.outputs)} outputs "
                             f"{list(graph.output_names)}; name the loss with loss_output=")
        loss, name = graph.outputs[0], graph.output_names[0]
    else:
        if loss_output not in graph.output_names:
            raise GraphError(f"grad: graph '{graph.name}' has no output '{loss_output}'; outputs are "
                             f"{list(graph.output_names)}")
        name = loss_output
        loss = graph.outputs[graph.output_names.index(loss_output)]
    where = f"layer '{loss.node.layer}' ({loss.node.op})" if loss.node else f"'{loss.name}'"
    if loss.shape not in ((), (1,)):
        raise GraphError(f"grad: the loss must be a scalar (shape () or (1,)); output '{name}' of {where} has "
                         f"shape {loss.shape}")
    if not loss.dtype.is_float:
        raise GraphError(f"grad: the loss output '{name}' of {where} must be float, got {loss.dtype.name.lower()}")
    return loss


def _targets(graph: Graph, wrt: Sequence[str] | None) -> list[Value]:
    if wrt is None:
        return [p for p in graph.params if p.trainable]
    by_name = {v.name: v for v in (*graph.inputs, *graph.params)}
    out = []
    for name in wrt:
        if name not in by_name:
            raise GraphError(f"grad: graph '{graph.name}' has no input or parameter '{name}'")
        v = by_name[name]
        if not v.dtype.is_float:
            raise GraphError(f"grad: cannot differentiate with respect to '{name}': it is "
                             f"{v.dtype.name.lower()}, not float")
        out.append(v)
    return out


def _active_nodes(graph: Graph, targets: Sequence[Value], loss: Value) -> tuple[list[Node], set[Value]]:
    """The nodes on a path from a target to the loss (they depend on a target and the loss depends on them), in
    reverse topological order, and the values that need a gradient (the targets and those nodes' outputs)."""
    varied: set[Value] = set(targets)
    forward = []
    for n in graph.nodes:
        if any(v in varied for v in n.inputs):
            varied.update(n.outputs)
            forward.append(n)
    useful: set[Value] = {loss}
    active = []
    for n in reversed(forward):
        if any(o in useful for o in n.outputs):
            useful.update(n.inputs)
            active.append(n)
    needed = set(targets)
    for n in active:
        needed.update(n.outputs)
    return active, needed


def _call_vjp(ctx: VjpContext, n: Node, grads_out: list[Value | None]) -> Sequence[Value | None]:
    opdef = get_op(n.op)
    if opdef.vjp is None:
        raise NoVjpError(f"op '{n.op}' has no VJP yet (layer '{n.layer}'); gradients cannot flow through it")
    ctx.layer = n.layer
    grads_in = list(opdef.vjp(ctx, n, grads_out))
    if len(grads_in) != len(n.inputs):
        raise GraphError(f"VJP of op '{n.op}' (layer '{n.layer}') returned {len(grads_in)} gradients for "
                         f"{len(n.inputs)} inputs")
    for v, g in zip(n.inputs, grads_in, strict=True):
        if g is not None and (g.shape != v.shape or g.dtype != v.dtype):
            raise GraphError(f"VJP of op '{n.op}' (layer '{n.layer}') returned a gradient of type {g.type} for an "
                             f"input of type {v.type}")
    return grads_in


def grad(graph: Graph, loss_output: str | None = None, wrt: Sequence[str] | None = None) -> Graph:
    """One graph computing ``graph``'s outputs and the gradients of the scalar loss output.

    ``loss_output``: the name of the loss (default: the graph's single output), of shape ``()`` or ``(1,)``.
    ``wrt``: names of the inputs or parameters to differentiate (default: every trainable parameter). Each
    gradient is an extra output named ``grad:<name>``, in ``wrt`` order, of the same shape and dtype; a value the
    loss does not depend on gets a zero gradient (not ``None``: an optimiser step can use it as is).
    """
    loss = _loss(graph, loss_output)
    targets = _targets(graph, wrt)
    b = GraphBuilder(f"{graph.name}_grad")
    mapping = _copy_forward(graph, b)
    active, needed = _active_nodes(graph, targets, loss)
    ctx = VjpContext(b, mapping, needed)
    grads: dict[Value, Value] = {}

    def accumulate(v: Value, g: Value) -> None:
        grads[v] = g if v not in grads else ctx.emit("add", [grads[v], g])

    ctx.layer = loss.node.layer if loss.node else loss.name
    grads[loss] = ctx.ones_like(mapping[loss])
    for n in active:
        grads_out = [grads.get(o) for o in n.outputs]
        if all(g is None for g in grads_out):
            continue
        for v, g in zip(n.inputs, _call_vjp(ctx, n, grads_out), strict=True):
            if g is not None and v in needed:
                ctx.layer = n.layer
                accumulate(v, g)
    for v in targets:
        g = grads.get(v)
        if g is None:
            ctx.layer = v.name
            g = ctx.zeros_like(mapping[v])
        b.output(g, GRAD_PREFIX + v.name)
    return b.build()


def is_grad_output(name: str) -> bool:
    return name.startswith(GRAD_PREFIX)


__all__ = ["GRAD_PREFIX", "NoVjpError", "VjpContext", "grad", "is_grad_output"]
