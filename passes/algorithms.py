"""select-algorithms: set each convolution's ``impl`` (algorithm and schedule) from a backend's chooser.

The pass is target-neutral: the chooser (for the CPU, :class:`cnncc.codegen.select.CpuConvChooser`) knows the
algorithms (the registry of :mod:`cnncc.convalgo`), their constraints, costs and errors; the pass only asks it per
conv node -- forward (``conv2d``, ``fused_conv2d``) and backward-data (``conv2d_grad_input``) alike -- writes the
answer into the IR, where the lowering reads it and never chooses, and records the choice with its reasons in
``ctx.choices`` (what ``cnncc explain`` prints). A forced algorithm that does not apply raises the chooser's
:class:`cnncc.errors.AlgorithmError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnncc.convalgo import CONV_OPS, with_impl
from cnncc.ir import Graph, Node
from cnncc.passes.rewrite import Rewriter, rewrite
from cnncc.passmanager import PassContext


@dataclass
class SelectConvAlgorithms:
    chooser: Any  # .choose(node) -> Choice with .impl, .layer and .reason(); optional .prepare(graph, params)
    name: str = "select-algorithms"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if hasattr(self.chooser, "prepare"):
            self.chooser.prepare(graph, ctx.params)

        def pattern(node: Node, rw: Rewriter) -> bool:
            if node.op not in CONV_OPS:
                return False
            choice = self.chooser.choose(node)
            ctx.choices[node.layer] = choice
            ctx.note(self.name, f"{node.layer}: {choice.reason()}")
            attrs = with_impl(node, choice.impl)
            rw.replace(node.outputs[0], rw.emit(node.op, [rw.value(v) for v in node.inputs], attrs, node.layer))
            return True

        return rewrite(graph, ctx, pattern)
