"""softmax: ``e^{x_k} / Σ_j e^{x_j}`` along ``axis`` (seed 004 L247-253), by default the class axis 1 of ``(N,
C)``.

Numerically stable: the maximum along ``axis`` is subtracted first, so every exponent is <= 0 and nothing
overflows; ``softmax([1000, -1000])`` is exactly ``[1, 0]``.

VJP: ``dx = y * (dy - Σ_axis dy * y)`` with ``y`` the forward result and the sum keeping its axis (``sum_to``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import normalize_axis, require_float
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register


@dataclass(frozen=True)
class SoftmaxAttrs:
    """``axis``: the axis normalised over (negative counts from the end); 1 is the class axis of (N, C)."""

    axis: int = 1


def infer_softmax(types: Sequence[TensorType], a: Any, where: Where) -> Sequence[TensorType]:
    """Shared by softmax and log_softmax: a float tensor of rank >= 1, ``axis`` in range; same type out."""
    x = types[0]
    require_float(x, "x", where)
    if x.rank == 0:
        raise where.fail("operand rank", f"x must have rank >= 1, got shape {x.shape}")
    normalize_axis(a.axis, x.rank, where)
    return (x,)


def shifted_exp(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x - max, e^(x - max), Σ e^(x - max))`` along ``axis`` in ``x``'s dtype; the sum keeps its axis."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return shifted, e, np.sum(e, axis=axis, keepdims=True)


def kept_axis_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """``shape`` with ``axis`` reduced to 1 (the shape of a sum along ``axis`` with ``keepdims``)."""
    axis %= len(shape)
    return shape[:axis] + (1,) + shape[axis + 1:]


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    y = ctx.value(node.outputs[0])
    dot = ctx.sum_to(ctx.emit("multiply", [dy, y]), kept_axis_shape(y.shape, node.attrs.axis))
    return [ctx.emit("multiply", [y, ctx.sub(dy, dot)])]


def _reference(arrays: Sequence[np.ndarray], a: SoftmaxAttrs) -> np.ndarray:
    x = arrays[0]
    _, e, total = shifted_exp(x, a.axis)
    return np.asarray(e / total, dtype=x.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: SoftmaxAttrs) -> int:
    return 4 * outs[0].size  # max, subtract + exp, sum, divide


OP = register(OpDef(name="softmax", inputs=("x",), infer=infer_softmax, reference=_reference,
                    attrs=SoftmaxAttrs, flops=_flops, vjp=_vjp, traits=OpTraits(category=Category.HEAD),
                    doc=__doc__ or ""))
