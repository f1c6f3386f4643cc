"""concat: join one or more tensors along ``axis`` (``numpy.concatenate`` / ``torch.cat``).

The channel concatenation of Inception modules and DenseNet blocks (implied by seed 003 L885-889, never
written). Variadic: any number >= 1 of operands ``x0, x1, ...`` of one float dtype and one rank, equal in
every dimension except ``axis``. The result's layout follows :func:`cnncc.ops.operands.common_layout` (rank 4
is NCHW).

VJP: each operand's gradient is its range of ``dy`` along ``axis``: ``slice(dy, axis, offset, offset + size)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import common_layout, normalize_axis, require_same_float
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register


@dataclass(frozen=True)
class ConcatAttrs:
    """``axis``: the axis joined along (negative counts from the end); 1 is the channel axis of NCHW."""

    axis: int = 1


def _infer(types: Sequence[TensorType], a: ConcatAttrs, where: Where) -> Sequence[TensorType]:
    names = tuple(f"x{i}" for i in range(len(types)))
    require_same_float(types, names, where)
    shapes = [t.shape for t in types]
    rank = types[0].rank
    if any(t.rank != rank for t in types):
        raise where.fail("operand rank", f"operands must all have the same rank; got shapes {shapes}")
    if rank == 0:
        raise where.fail("operand rank", f"cannot concatenate scalars; got shapes {shapes}")
    axis = normalize_axis(a.axis, rank, where)
    rest = {s[:axis] + s[axis + 1:] for s in shapes}
    if len(rest) > 1:
        raise where.fail("concat shapes", f"all dimensions except axis {axis} must match; "
                                          f"got shapes {shapes}")
    shape = shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]
    return (TensorType(shape, types[0].dtype, common_layout(types, names, shape, where)),)


def _reference(arrays: Sequence[np.ndarray], a: ConcatAttrs) -> np.ndarray:
    return np.concatenate(list(arrays), axis=a.axis)


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    from cnncc.ops.slice import SliceAttrs

    (dy,) = grads_out
    axis = node.attrs.axis % dy.type.rank
    grads, offset = [], 0
    for v in node.inputs:
        size = v.shape[axis]
        grads.append(ctx.emit("slice", [dy], SliceAttrs(axis, offset, offset + size)) if ctx.needs_grad(v) else None)
        offset += size
    return grads


OP = register(OpDef(name="concat", inputs=("x0", "x1"), variadic=True, infer=_infer, reference=_reference,
                    attrs=ConcatAttrs, vjp=_vjp, traits=OpTraits(category=Category.BINARY), doc=__doc__ or ""))
