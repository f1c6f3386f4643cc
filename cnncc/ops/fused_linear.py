"""fused_linear: ``epilogue(x Wᵀ + b, residuals...)`` in one op, produced by the fusion passes (see
``fused_conv2d``). Operands: x, weight, bias (always present), then one residual per ``add`` step.

VJP: the components' VJPs chained, as ``fused_conv2d``'s: :func:`cnncc.ops.epilogue.epilogue_vjp`, then
:func:`cnncc.ops.linear.linear_grads`.

Kept as an op of its own, for the reasons ``fused_conv2d`` gives; ``OpTraits(base="linear")`` links it to ``linear``
(whose ``fused_form`` is this op).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops import linear
from cnncc.ops.epilogue import EpilogueStep, apply_epilogue, check_epilogue, epilogue_flops, epilogue_vjp
from cnncc.ops.registry import Category, NoAttrs, OpDef, OpTraits, Where, register


@dataclass(frozen=True)
class FusedLinearAttrs:
    epilogue: tuple[EpilogueStep, ...] = ()


def _infer(types: Sequence[TensorType], a: FusedLinearAttrs, where: Where) -> Sequence[TensorType]:
    if len(types) < 3:
        raise where.fail("operand count", f"expected x, weight, bias and residuals, got {len(types)} operands")
    out = linear.OP.infer(types[:3], NoAttrs(), where)[0]
    check_epilogue(a.epilogue, out, types[3:], where)
    return (out,)


def _reference(arrays: Sequence[np.ndarray], a: FusedLinearAttrs) -> np.ndarray:
    return apply_epilogue(linear.OP.run_reference(arrays[:3], NoAttrs())[0], a.epilogue, arrays[3:])


def _macs(ins: Sequence[TensorType], outs: Sequence[TensorType], a: FusedLinearAttrs) -> int:
    return linear.OP.macs(ins[:3], outs, NoAttrs())


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: FusedLinearAttrs) -> int:
    return linear.OP.flops(ins[:3], outs, NoAttrs()) + epilogue_flops(a.epilogue, outs[0])


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    z = ctx.emit("linear", [ctx.value(v) for v in node.inputs[:3]])
    dz, d_res = epilogue_vjp(ctx, z, node.attrs.epilogue, node.inputs[3:], grads_out[0])
    return [*linear.linear_grads(ctx, node.inputs[:3], dz), *d_res]


OP = register(OpDef(name="fused_linear", inputs=("x", "weight", "bias"), infer=_infer, reference=_reference,
                    attrs=FusedLinearAttrs, macs=_macs, flops=_flops, variadic=True, vjp=_vjp,
                    traits=OpTraits(category=Category.LINEAR, base="linear"), doc=__doc__ or ""))
