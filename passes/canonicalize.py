"""Canonicalisation passes: dead code, identities, reshape chains, common subexpressions, constant folding.

Each is semantics-preserving on any graph (inference or training) unless its docstring says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncc.ir import Graph, Node
from cnncc.ops import get_op
from cnncc.ops.registry import draws_random, is_identity, traits
from cnncc.passes.rewrite import Rewriter, prune, rewrite_noting
from cnncc.passmanager import PassContext


@dataclass(frozen=True)
class DeadCodeElimination:
    """Drop nodes no output needs, and parameters nothing reads. Inputs are kept (they are the graph's signature)."""

    name: str = "dce"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        out = prune(graph)
        if len(out.nodes) != len(graph.nodes):
            ctx.note(self.name, f"removed {len(graph.nodes) - len(out.nodes)} dead nodes")
        return out


@dataclass(frozen=True)
class RemoveIdentities:
    """Forward the input of ops that compute nothing: inference-mode dropout, reshapes to the same shape, identity
    transposes (each op's ``OpTraits.identity_when``). Training-mode dropout is left alone (it draws a mask)."""

    name: str = "remove-identities"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        def pattern(node: Node, rw: Rewriter) -> bool:
            if node.inputs and is_identity(node.op, node.attrs, node.inputs[0].type, node.outputs[0].type) and \
                    node.inputs[0].type == node.outputs[0].type:
                rw.replace(node.outputs[0], rw.value(node.inputs[0]))
                return True
            return False

        return rewrite_noting(graph, ctx, pattern, self.name, "removed {n} identity ops")[0]


@dataclass(frozen=True)
class FoldReshapes:
    """A reshape or flatten of a reshape or flatten becomes one reshape of the original value (row-major order is
    preserved by both, so only the final shape matters: ``OpTraits.reshape``). The intermediate stays if something
    else reads it."""

    name: str = "fold-reshapes"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        from cnncc.ops.reshape import ReshapeAttrs

        def pattern(node: Node, rw: Rewriter) -> bool:
            src = node.inputs[0].node if traits(node.op).reshape else None
            if src is None or not traits(src.op).reshape:
                return False
            while src.inputs[0].node is not None and traits(src.inputs[0].node.op).reshape:
                src = src.inputs[0].node  # to the start of the chain
            new = rw.emit("reshape", [rw.value(src.inputs[0])], ReshapeAttrs(shape=node.outputs[0].shape), node.layer)
            rw.replace(node.outputs[0], new)
            return True

        return rewrite_noting(graph, ctx, pattern, self.name, "folded {n} reshape chains")[0]


@dataclass(frozen=True)
class CommonSubexpressions:
    """Merge nodes that apply the same op with equal attributes to the same operands (the first one stays).
    Training-mode dropout is never merged: two draws are two different masks."""

    name: str = "cse"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        seen: dict[tuple[object, ...], Node] = {}
        def pattern(node: Node, rw: Rewriter) -> bool:
            if draws_random(node.op, node.attrs):
                return False
            key = (node.op, node.attrs, tuple(id(rw.value(v)) for v in node.inputs))
            if key in seen:
                for o, first in zip(node.outputs, seen[key].outputs, strict=True):
                    rw.replace(o, rw.value(first))
                return True
            seen[key] = node
            return False

        return rewrite_noting(graph, ctx, pattern, self.name, "merged {n} duplicate nodes")[0]


@dataclass(frozen=True)
class ConstantFolding:
    """Evaluate nodes whose operands are all parameters (weight transforms) once, at compile time, into new frozen
    parameters. Needs the weights bound in the context. Ops that draw random masks are left alone."""

    name: str = "constant-folding"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        def pattern(node: Node, rw: Rewriter) -> bool:
            arrays = [rw.array(rw.value(v)) for v in node.inputs]
            random = traits(node.op).random_when is not None
            if not arrays or any(a is None for a in arrays) or random or len(node.outputs) != 1:
                return False
            result = get_op(node.op).run_reference([a.astype("float32") for a in arrays if a is not None],
                                                   node.attrs)[0]
            rw.replace(node.outputs[0], rw.new_param(f"{node.layer}.const", result))
            return True

        return rewrite_noting(graph, ctx, pattern, self.name, "folded {n} constant nodes")[0]
