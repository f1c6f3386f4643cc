"""log_softmax: ``x_k - log Σ_j e^{x_j}`` along ``axis``, PyTorch's ``LogSoftmax(dim=1)`` (seed 003 L31, L62).

Computed as ``(x - max) - log Σ e^(x - max)``: stable for any input, and exact where softmax underflows
(``log_softmax([1000, -1000]) = [0, -2000]``).

VJP: ``dx = dy - softmax(x) * Σ_axis dy`` (the sum keeping its axis); ``softmax(x)`` is recomputed with the
softmax op rather than as ``exp(y)`` (cnncc has no exp op, and the fused softmax is as cheap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.registry import Category, OpDef, OpTraits, register
from cnncc.ops.softmax import SoftmaxAttrs, infer_softmax, kept_axis_shape, shifted_exp


@dataclass(frozen=True)
class LogSoftmaxAttrs:
    """``axis``: the axis normalised over (negative counts from the end); 1 is the class axis of (N, C)."""

    axis: int = 1


def log_softmax_vjp(ctx: Any, x: Any, dy: Any, axis: int) -> Any:
    """``dx`` for ``y = log_softmax(x)`` along ``axis``, ``x`` and ``dy`` values of the graph being built."""
    total = ctx.sum_to(dy, kept_axis_shape(x.shape, axis))
    p = ctx.emit("softmax", [x], SoftmaxAttrs(axis))
    return ctx.sub(dy, ctx.emit("multiply", [p, total]))


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    return [log_softmax_vjp(ctx, ctx.value(node.inputs[0]), dy, node.attrs.axis)]


def _reference(arrays: Sequence[np.ndarray], a: LogSoftmaxAttrs) -> np.ndarray:
    x = arrays[0]
    shifted, _, total = shifted_exp(x, a.axis)
    return np.asarray(shifted - np.log(total), dtype=x.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: LogSoftmaxAttrs) -> int:
    return 4 * outs[0].size  # max, subtract + exp, sum, subtract (one log per row is not counted)


OP = register(OpDef(name="log_softmax", inputs=("x",), infer=infer_softmax, reference=_reference,
                    attrs=LogSoftmaxAttrs, flops=_flops, vjp=_vjp, traits=OpTraits(category=Category.HEAD),
                    doc=__doc__ or ""))
