"""sum_to: sum ``x`` over the axes that broadcasting stretched, down to ``shape`` (``x.shape`` must be the NumPy
broadcast of ``shape`` to it).

It is the VJP of broadcasting (PyTorch's ``sum_to_size``): the gradient of ``a`` in ``a + b`` with ``a`` of shape
``(C, 1, 1)`` and ``b`` of shape ``(N, C, H, W)`` is ``sum_to(dy, (C, 1, 1))``: summed over the leading axis that
``a`` lacks and over the axes where ``a`` has size 1. It also sums a linear layer's output gradient over the batch
for the bias, and a row-wise sum with kept axis for the softmax VJP. The result follows :func:`image_type`'s rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType, image_type
from cnncc.ops.operands import require_float
from cnncc.ops.registry import OpDef, Where, register


@dataclass(frozen=True)
class SumToAttrs:
    """``shape``: the result shape; it must broadcast to the input's shape."""

    shape: tuple[int, ...]


def summed_axes(src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """(axes of ``src`` summed with kept dims, number of leading axes ``dst`` lacks)."""
    lead = len(src) - len(dst)
    return tuple(i for i in range(len(src)) if i < lead or (dst[i - lead] == 1 and src[i] != 1)), lead


def _infer(types: Sequence[TensorType], a: SumToAttrs, where: Where) -> Sequence[TensorType]:
    x = types[0]
    require_float(x, "x", where)
    shape = tuple(a.shape)
    ok = all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape) and len(shape) <= x.rank
    lead = x.rank - len(shape)
    if not ok or any(d not in (1, s) for d, s in zip(shape, x.shape[lead:], strict=True)):
        raise where.fail("target shape", f"shape {shape} must broadcast to the input shape {x.shape} (same or fewer "
                                         "axes, each of size 1 or the input's size)")
    return (image_type(shape, x.dtype),)


def _reference(arrays: Sequence[np.ndarray], a: SumToAttrs) -> np.ndarray:
    x = arrays[0]
    axes, lead = summed_axes(x.shape, tuple(a.shape))
    total = np.sum(x, axis=axes, keepdims=True, dtype=x.dtype) if axes else x.copy()
    return np.asarray(total.reshape(a.shape), dtype=x.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: SumToAttrs) -> int:
    return ins[0].size - outs[0].size


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    """Broadcast back: ``dy`` (the result's shape) times ones of the input's shape."""
    (dy,) = grads_out
    x = ctx.value(node.inputs[0])
    return [ctx.emit("multiply", [ctx.ones_like(x), dy])]


OP = register(OpDef(name="sum_to", inputs=("x",), infer=_infer, reference=_reference, attrs=SumToAttrs,
                    flops=_flops, vjp=_vjp, doc=__doc__ or ""))
