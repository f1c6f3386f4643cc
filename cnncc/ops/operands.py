"""Operand checks shared by the shape rules of several ops, and the loss-reduction enum.

Every check raises through ``where.fail(rule, detail)`` so its message names the layer, the op, the rule and
the values seen, like every other shape rule.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from cnncc.ir.types import Layout, TensorType, image_type
from cnncc.ops.elementwise import require_float
from cnncc.ops.registry import Where

__all__ = ["Reduction", "common_layout", "dtype_name", "normalize_axis", "require_float", "require_int64",
           "require_rank", "require_same_float"]


class Reduction(enum.Enum):
    """How a loss reduces its per-sample values to the scalar it returns (PyTorch's ``reduction=``)."""

    MEAN = "mean"
    SUM = "sum"


def dtype_name(t: TensorType) -> str:
    """``float32``, ``float64`` or ``int64``: the name used in error messages."""
    return str(t.dtype.numpy)


def require_int64(t: TensorType, operand: str, where: Where) -> None:
    """``operand`` must hold int64 class indices."""
    if t.dtype.is_float:
        raise where.fail("operand dtype", f"{operand} must be int64 class indices, got {dtype_name(t)}")


def require_same_float(types: Sequence[TensorType], names: Sequence[str], where: Where) -> None:
    """All operands float, all of one dtype (no implicit promotion anywhere in cnncc)."""
    for t, n in zip(types, names, strict=False):
        require_float(t, n, where)
    if len({t.dtype for t in types}) > 1:
        seen = ", ".join(f"{n} is {dtype_name(t)}" for t, n in zip(types, names, strict=False))
        raise where.fail("operand dtype", f"dtypes must match: {seen}")


def require_rank(t: TensorType, operand: str, ranks: Sequence[int], meaning: str, where: Where) -> None:
    """``operand`` must have one of ``ranks``; ``meaning`` spells the expected axes, e.g. ``(N, C)``."""
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise where.fail("operand rank", f"{operand} must be rank {want} {meaning}, got shape {t.shape}")


def normalize_axis(axis: int, rank: int, where: Where, name: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)`` mapped to ``[0, rank)``, as in NumPy and PyTorch."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise where.fail(name, f"{name} must be an int, got {axis!r}")
    if not -rank <= axis < rank:
        raise where.fail(name, f"{name} = {axis} is out of range for rank {rank} "
                               f"(valid: {-rank} to {rank - 1})")
    return axis % rank


def common_layout(types: Sequence[TensorType], names: Sequence[str], out_shape: tuple[int, ...],
                  where: Where) -> Layout:
    """The layout of a result combining ``types`` elementwise (add, multiply, concat).

    It is the layout of the operands whose rank equals the result's, ignoring ``PLAIN`` ones (parameters such
    as a ``(1, C, 1, 1)`` scale are created ``PLAIN``); two different image layouts are an error. When every
    such operand is ``PLAIN``, :func:`image_type`'s rule applies: rank 4 is NCHW, any other rank PLAIN.
    """
    found = {(t.layout, n) for t, n in zip(types, names, strict=False)
             if t.rank == len(out_shape) and t.layout is not Layout.PLAIN}
    layouts = {lay for lay, _ in found}
    if len(layouts) > 1:
        seen = ", ".join(f"{n} is {lay.value}" for lay, n in sorted(found, key=lambda p: p[1]))
        raise where.fail("operand layout", f"operands have different layouts: {seen}")
    if layouts:
        return layouts.pop()
    return image_type(out_shape).layout
