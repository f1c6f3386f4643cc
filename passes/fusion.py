"""Fusion passes for inference: fold batch norm into the preceding convolution or linear layer, then fuse
activations and residual adds into that layer's epilogue (applied to the accumulators before the store).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncc.convalgo import conv_attrs
from cnncc.ir import Graph, Node, Value
from cnncc.ops.epilogue import EpilogueStep
from cnncc.ops.fused_conv2d import FusedConv2dAttrs
from cnncc.ops.fused_linear import FusedLinearAttrs
from cnncc.ops.registry import Category, EpilogueRole, NoAttrs, traits
from cnncc.passes.rewrite import Rewriter, rewrite_noting, single_user
from cnncc.passmanager import PassContext


def _takes_epilogue(op: str) -> bool:
    """A layer an epilogue can join: one with a fused form (conv2d, linear) or a fused op itself."""
    t = traits(op)
    return t.fused_form is not None or t.base is not None


def _bias_of(rw: Rewriter, node: Node, channels: int) -> np.ndarray | None:
    """The layer's bias as an array (zeros when it has none), or None if it is not a parameter."""
    if traits(node.op).fused_form is not None and len(node.inputs) < 3:
        return np.zeros(channels)
    return rw.array(rw.value(node.inputs[2]))


@dataclass(frozen=True)
class FoldBatchNorm:
    """conv2d/linear -> batch_norm becomes one conv2d/linear with scaled weights and a shifted bias:
    w' = w·s, b' = (b − μ)·s + β with s = γ/√(σ² + ε) (per output channel).

    Requires: an inference batch_norm (``training=False``: constant running statistics), parameters for every
    operand involved, and a layer output read by the batch norm only. Leaves training graphs alone.
    """

    name: str = "fold-batchnorm"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        def pattern(node: Node, rw: Rewriter) -> bool:
            layer = node.inputs[0].node if node.op == "batch_norm" and not node.attrs.training else None
            if layer is None or traits(layer.op).fused_form is None or not single_user(rw, node.inputs[0]):
                return False
            stats = [rw.array(rw.value(v)) for v in node.inputs[1:]]
            w = rw.array(rw.value(layer.inputs[1]))
            b = _bias_of(rw, layer, layer.outputs[0].shape[1])
            if w is None or b is None or any(a is None for a in stats):
                return False
            gamma, beta, mean, var = stats
            scale = gamma / np.sqrt(var + node.attrs.eps)
            shape = (-1,) + (1,) * (w.ndim - 1)
            new_w = rw.new_param(f"{layer.layer}.weight.bnfold", w * scale.reshape(shape))
            new_b = rw.new_param(f"{layer.layer}.bias.bnfold", (b - mean) * scale + beta)
            ops = [rw.value(layer.inputs[0]), new_w, new_b]
            rw.replace(node.outputs[0], rw.emit(layer.op, ops, layer.attrs, layer.layer))
            return True

        return rewrite_noting(graph, ctx, pattern, self.name, "folded {n} batch norms into the layer before them")[0]


def _as_fused(rw: Rewriter, layer: Node) -> tuple[str, list[Value], tuple[EpilogueStep, ...], object]:
    """(fused op, operands, epilogue so far, base attrs) for a conv2d/linear/fused node (bias made explicit)."""
    ops, fused = [rw.value(v) for v in layer.inputs], traits(layer.op).fused_form
    if fused is None:  # already fused
        return layer.op, ops, layer.attrs.epilogue, layer.attrs
    if len(ops) < 3:
        ops.append(rw.new_param(f"{layer.layer}.bias.zero", np.zeros(layer.outputs[0].shape[1])))
    return fused, ops, (), layer.attrs


def _emit_fused(rw: Rewriter, layer: Node, op: str, ops: list[Value], steps: tuple[EpilogueStep, ...],
                base: object) -> Value:
    if op == "fused_conv2d":
        conv = conv_attrs(layer)  # base's convolution attributes (layer is a conv2d or a fused_conv2d)
        attrs: object = FusedConv2dAttrs(conv=conv, epilogue=steps)
    else:
        attrs = FusedLinearAttrs(epilogue=steps)
    return rw.emit(op, ops, attrs, layer.layer)


@dataclass(frozen=True)
class FuseEpilogue:
    """An activation, or a residual add, after a conv2d/linear (or an already fused one) joins its epilogue.

    Requires: the layer's output is read by this node only, and the layer's bias is a parameter (or absent). An add
    is fused only when both operands have the output's shape (no broadcasting) and, for linear layers and grouped
    convolutions, not at all (``fuse_residual_into`` lists the layer kinds that take residuals).
    """

    name: str = "fuse-epilogue"
    fuse_residual_into: tuple[str, ...] = ("dense-conv",)

    def _takes_residual(self, layer: Node) -> bool:
        conv = conv_attrs(layer)
        return traits(layer.op).category is Category.CONV and conv.groups == 1 and \
            "dense-conv" in self.fuse_residual_into

    def _producer(self, node: Node, rw: Rewriter) -> tuple[Node, Value | None] | None:
        """The layer this node can fuse into, and the residual operand (for an add)."""
        role = traits(node.op).epilogue
        if role is EpilogueRole.ACTIVATION:
            layer = node.inputs[0].node
            if layer is not None and _takes_epilogue(layer.op) and single_user(rw, node.inputs[0]):
                return layer, None
            return None
        if role is EpilogueRole.RESIDUAL and node.inputs[0].shape == node.inputs[1].shape == node.outputs[0].shape:
            for k in (0, 1):
                layer, other = node.inputs[k].node, node.inputs[1 - k]
                if layer is not None and _takes_epilogue(layer.op) and single_user(rw, node.inputs[k]) and \
                        self._takes_residual(layer) and other.node is not layer:
                    return layer, other
        return None

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        def pattern(node: Node, rw: Rewriter) -> bool:
            found = self._producer(node, rw)
            if found is None:
                return False
            layer, residual = found
            op, ops, steps, base = _as_fused(rw, layer)
            if residual is None:
                steps = (*steps, EpilogueStep(node.op, node.attrs if node.attrs is not None else NoAttrs()))
            else:
                steps, ops = (*steps, EpilogueStep("add")), [*ops, rw.value(residual)]
            rw.replace(node.outputs[0], _emit_fused(rw, layer, op, ops, steps, base))
            return True

        out, total = graph, 0
        while True:  # chains (conv -> add -> relu) fuse one step per sweep
            out, n = rewrite_noting(out, ctx, pattern, self.name, None)
            total += n
            if n == 0:
                break
        if total:
            ctx.note(self.name, f"fused {total} activations/residual adds into layer epilogues")
        return out
