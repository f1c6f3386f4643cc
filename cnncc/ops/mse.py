"""mse: mean squared error ``(1/n) Σ (prediction − target)²`` over every element (``torch.nn.MSELoss``).

The seeds write the same loss with other constant factors: ``E_total = Σ ½ (target − output)²`` (seed 000
L682-684) and ``J(θ) = (1/2m) Σ (h_θ(x) − y)²`` (seed 003 L304). A constant factor does not change the
minimiser; it only scales the gradients (and so the effective learning rate). cnncc follows PyTorch: MEAN
divides by the number of elements, SUM is the plain sum of squares (twice the seeds' ``E_total``).

Operands of one float dtype and one shape; the result is a scalar (shape ``()``).

VJP: ``d prediction = 2 g (prediction - target) / n`` (``/ n`` for MEAN only), ``d target = -d prediction``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.nll import check_reduction, loss_factor, reduce_loss
from cnncc.ops.operands import Reduction, require_same_float
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register


@dataclass(frozen=True)
class MseAttrs:
    """``reduction``: MEAN (default, divide by the element count) or SUM."""

    reduction: Reduction = Reduction.MEAN


def _infer(types: Sequence[TensorType], a: MseAttrs, where: Where) -> Sequence[TensorType]:
    check_reduction(a.reduction, where)
    pred, target = types
    require_same_float(types, ("prediction", "target"), where)
    if pred.shape != target.shape:
        raise where.fail("target shape", f"prediction has shape {pred.shape} but target has shape "
                                         f"{target.shape}; they must match")
    return (TensorType((), pred.dtype),)


def _reference(arrays: Sequence[np.ndarray], a: MseAttrs) -> np.ndarray:
    pred, target = arrays
    diff = pred - target
    return reduce_loss(diff * diff, a.reduction, pred.dtype)


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (g,) = grads_out
    pred, target = (ctx.value(v) for v in node.inputs)
    c = loss_factor(ctx, g, node.attrs.reduction, pred.type.size, 2.0)
    d_pred = ctx.emit("multiply", [ctx.sub(pred, target), c])
    d_target = ctx.scale(d_pred, -1.0) if ctx.needs_grad(node.inputs[1]) else None
    return [d_pred if ctx.needs_grad(node.inputs[0]) else None, d_target]


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: MseAttrs) -> int:
    return 3 * ins[0].size + 1


OP = register(OpDef(name="mse", inputs=("prediction", "target"), infer=_infer, reference=_reference,
                    attrs=MseAttrs, flops=_flops, vjp=_vjp, traits=OpTraits(category=Category.HEAD), doc=__doc__ or ""))
