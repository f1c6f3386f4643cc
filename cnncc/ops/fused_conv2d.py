"""fused_conv2d: a convolution with its bias and epilogue (activations, residual adds) in one op.

Produced by the fusion passes (conv-BN folding and epilogue fusion, ``cnncc.passes.fusion``), never by the DSL:
``y = epilogue(conv2d(x, w) + bias, residuals...)``. Operands: x, weight, bias (always present), then one residual
per ``add`` step. The backend applies the epilogue to the register accumulators before the store.

VJP: the components' VJPs chained (:func:`cnncc.ops.epilogue.epilogue_vjp` back through the epilogue, recomputing
``conv2d(x, w, bias)`` and each step's input, then :func:`cnncc.ops.conv2d.conv_grads`); a residual gets the
gradient flowing into its ``add``. Differentiating before fusion gives the same gradients with fewer nodes.

Kept as an op of its own rather than an optional epilogue attribute on ``conv2d`` (issue 13 item 5): its operands
differ (bias always present, then one residual per ``add`` step: variadic) and so does its attribute type, while
``conv2d`` stays what the DSL and the VJPs emit; one op with an optional epilogue would change the printed IR of
every convolution (every golden pass test) and the conv-algorithm code that is being rewritten at the same time,
for no change in the generated code (both already share one lowering). Code that treats both alike asks the traits:
``OpTraits(base="conv2d")`` here, ``fused_form="fused_conv2d"`` on conv2d, ``category=Category.CONV`` on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops import conv2d
from cnncc.ops.epilogue import EpilogueStep, apply_epilogue, check_epilogue, epilogue_flops, epilogue_vjp
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register


@dataclass(frozen=True)
class FusedConv2dAttrs:
    conv: conv2d.Conv2dAttrs = conv2d.Conv2dAttrs()
    epilogue: tuple[EpilogueStep, ...] = ()


def _infer(types: Sequence[TensorType], a: FusedConv2dAttrs, where: Where) -> Sequence[TensorType]:
    if len(types) < 3:
        raise where.fail("operand count", f"expected x, weight, bias and residuals, got {len(types)} operands")
    out = conv2d.OP.infer(types[:3], a.conv, where)[0]
    check_epilogue(a.epilogue, out, types[3:], where)
    return (out,)


def _reference(arrays: Sequence[np.ndarray], a: FusedConv2dAttrs) -> np.ndarray:
    y = conv2d.OP.run_reference(arrays[:3], a.conv)[0]
    return apply_epilogue(y, a.epilogue, arrays[3:])


def _macs(ins: Sequence[TensorType], outs: Sequence[TensorType], a: FusedConv2dAttrs) -> int:
    return conv2d.OP.macs(ins[:3], outs, a.conv)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: FusedConv2dAttrs) -> int:
    return conv2d.OP.flops(ins[:3], outs, a.conv) + epilogue_flops(a.epilogue, outs[0])


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    a: FusedConv2dAttrs = node.attrs
    z = ctx.emit("conv2d", [ctx.value(v) for v in node.inputs[:3]], a.conv)
    dz, d_res = epilogue_vjp(ctx, z, a.epilogue, node.inputs[3:], grads_out[0])
    return [*conv2d.conv_grads(ctx, node.inputs[:3], a.conv, dz), *d_res]


OP = register(OpDef(name="fused_conv2d", inputs=("x", "weight", "bias"), infer=_infer, reference=_reference,
                    attrs=FusedConv2dAttrs, macs=_macs, flops=_flops, algorithms=conv2d.ALGORITHMS, variadic=True,
                    vjp=_vjp, traits=OpTraits(category=Category.CONV, base="conv2d"), doc=__doc__ or ""))
