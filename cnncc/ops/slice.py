"""slice: the contiguous range ``start:stop`` of one axis (``x[:, start:stop]`` for ``axis = 1``).

Operand ``x`` of rank >= 1; attributes :class:`SliceAttrs` with ``0 <= start < stop <= x.shape[axis]`` (no step, no
negative indices). The result keeps x's rank and layout rule (:func:`image_type`: rank 4 is NCHW). It is the VJP
of ``concat`` (each operand's gradient is its slice of ``dy``).

VJP: ``dy`` put back in place with zeros around it: ``concat(zeros(before), dy, zeros(after))`` along ``axis``, the
zero blocks built by ``fill_like`` on slices of ``x`` (an empty block is left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType, image_type
from cnncc.ops.operands import normalize_axis, require_float
from cnncc.ops.registry import OpDef, Where, register


@dataclass(frozen=True)
class SliceAttrs:
    """``axis`` (negative counts from the end), ``start`` and ``stop`` with ``0 <= start < stop <= size``."""

    axis: int
    start: int
    stop: int


def _infer(types: Sequence[TensorType], a: SliceAttrs, where: Where) -> Sequence[TensorType]:
    x = types[0]
    require_float(x, "x", where)
    if x.rank == 0:
        raise where.fail("operand rank", f"cannot slice a scalar; x has shape {x.shape}")
    axis = normalize_axis(a.axis, x.rank, where)
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (a.start, a.stop))
    if not ints or not 0 <= a.start < a.stop <= x.shape[axis]:
        raise where.fail("slice range", f"need 0 <= start < stop <= {x.shape[axis]} (x.shape[{axis}] of x "
                                        f"{x.shape}), got start={a.start!r}, stop={a.stop!r}")
    shape = x.shape[:axis] + (a.stop - a.start,) + x.shape[axis + 1:]
    return (image_type(shape, x.dtype),)


def _reference(arrays: Sequence[np.ndarray], a: SliceAttrs) -> np.ndarray:
    x = arrays[0]
    index = [slice(None)] * x.ndim
    index[a.axis] = slice(a.start, a.stop)
    return x[tuple(index)].copy()


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    x = ctx.value(node.inputs[0])
    a: SliceAttrs = node.attrs
    size = x.shape[a.axis]
    parts = []
    if a.start > 0:
        parts.append(ctx.zeros_like(ctx.emit("slice", [x], SliceAttrs(a.axis, 0, a.start))))
    parts.append(dy)
    if a.stop < size:
        parts.append(ctx.zeros_like(ctx.emit("slice", [x], SliceAttrs(a.axis, a.stop, size))))
    if len(parts) == 1:
        return [dy]
    from cnncc.ops.concat import ConcatAttrs

    return [ctx.emit("concat", parts, ConcatAttrs(a.axis))]


OP = register(OpDef(name="slice", inputs=("x",), infer=_infer, reference=_reference, attrs=SliceAttrs, vjp=_vjp,
                    doc=__doc__ or ""))
