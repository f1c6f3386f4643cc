"""fill_like: a tensor of ``x``'s type (shape, dtype, layout) with every element ``value``; ``x``'s data is not read.

The constants of the backward graph (the seed gradient 1 of the loss, ``1/N`` of a mean, ``-1`` of a
subtraction) are built with it, so they take the run's float dtype like every other value (the interpreter runs a
graph in float32 or float64) instead of being stored as weights of a fixed dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_float
from cnncc.ops.registry import OpDef, Where, register


@dataclass(frozen=True)
class FillLikeAttrs:
    """``value``: the finite number every element takes (rounded to the run dtype)."""

    value: float = 0.0


def _infer(types: Sequence[TensorType], a: FillLikeAttrs, where: Where) -> Sequence[TensorType]:
    require_float(types[0], "x", where)
    if isinstance(a.value, bool) or not isinstance(a.value, int | float) or not math.isfinite(a.value):
        raise where.fail("value", f"value must be a finite number, got {a.value!r}")
    return (types[0],)


def _reference(arrays: Sequence[np.ndarray], a: FillLikeAttrs) -> np.ndarray:
    x = arrays[0]
    return np.full(x.shape, a.value, dtype=x.dtype)


def _vjp(ctx: object, node: object, grads_out: Sequence[object]) -> list[None]:
    return [None]  # the result does not depend on x's values


OP = register(OpDef(name="fill_like", inputs=("x",), infer=_infer, reference=_reference, attrs=FillLikeAttrs,
                    vjp=_vjp, doc=__doc__ or ""))
