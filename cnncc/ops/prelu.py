"""prelu: ``x`` for ``x >= 0``, ``alpha_c * x`` for ``x < 0``, with a learned slope per channel (seed 000
L485-499).

Operands: ``x`` of rank >= 1 and ``alpha`` of shape ``(1,)`` (one slope shared by every channel) or ``(C,)``
with ``C = x.shape[1]`` (one slope per channel, broadcast over axis 1), as in ``torch.nn.functional.prelu``.

VJP, as PyTorch (the derivative at 0 is the slope: ``x > 0`` selects the identity branch): with ``m = (x > 0)``,
``p = dy · m = activation_grad(relu)(x, dy)`` and ``q = dy − p``, ``dx = p + α q`` and ``dα = Σ x q`` summed over
every axis but the channel axis (over every axis for a shared slope).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import Category, NoAttrs, OpDef, OpTraits, Where, register


def _infer(types: Sequence[TensorType], attrs: NoAttrs, where: Where) -> Sequence[TensorType]:
    x, alpha = types
    require_same_float(types, ("x", "alpha"), where)
    if x.rank == 0:
        raise where.fail("operand rank", f"x must have rank >= 1, got shape {x.shape}")
    if alpha.shape == (1,):
        return (x,)
    if x.rank >= 2 and alpha.shape == (x.shape[1],):
        return (x,)
    channels = f"(1,) or ({x.shape[1]},)" if x.rank >= 2 else "(1,)"
    raise where.fail("alpha shape", f"alpha must have shape {channels} for x of shape {x.shape}, "
                                    f"got {alpha.shape}")


def _reference(arrays: Sequence[np.ndarray], attrs: NoAttrs) -> np.ndarray:
    x, alpha = arrays
    a = alpha.reshape((1, alpha.size) + (1,) * (x.ndim - 2)) if alpha.size > 1 else alpha.reshape(())
    out = np.where(x >= 0, x, a * x)
    return np.asarray(out, dtype=x.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: NoAttrs) -> int:
    return 2 * outs[0].size


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    from cnncc.ops.activation_grad import ActivationGradAttrs
    from cnncc.ops.reshape import ReshapeAttrs

    (dy,) = grads_out
    x, alpha = node.inputs
    vx, va = ctx.value(x), ctx.value(alpha)
    p = ctx.emit("activation_grad", [vx, dy], ActivationGradAttrs("relu"))
    q = ctx.sub(dy, p)
    per_channel = alpha.shape != (1,)
    keep = (1, x.shape[1]) + (1,) * (x.type.rank - 2) if per_channel else alpha.shape
    dx = da = None
    if ctx.needs_grad(x):
        a_b = ctx.emit("reshape", [va], ReshapeAttrs(keep)) if keep != alpha.shape else va
        dx = ctx.emit("add", [p, ctx.emit("multiply", [q, a_b])])
    if ctx.needs_grad(alpha):
        s = ctx.sum_to(ctx.emit("multiply", [vx, q]), keep)
        da = ctx.emit("reshape", [s], ReshapeAttrs(alpha.shape)) if keep != alpha.shape else s
    return [dx, da]


OP = register(OpDef(name="prelu", inputs=("x", "alpha"), infer=_infer, reference=_reference, flops=_flops, vjp=_vjp,
                    traits=OpTraits(category=Category.ACTIVATION), doc=__doc__ or ""))
