"""reshape: the same elements, row-major order, a new shape (``numpy.reshape`` / ``torch.reshape``).

``shape`` may hold one ``-1``, inferred from the element count. The result follows :func:`image_type`'s rule
(rank 4 is NCHW, any other rank PLAIN): cnncc image tensors are NCHW, and a row-major reshape to rank 4 is
read as NCHW exactly as PyTorch reads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType, image_type
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register


@dataclass(frozen=True)
class ReshapeAttrs:
    """``shape``: the target shape; dims >= 0, at most one ``-1``."""

    shape: tuple[int, ...]


def _target(x: TensorType, a: ReshapeAttrs, where: Where) -> tuple[int, ...]:
    want = tuple(a.shape)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < -1 for d in want):
        raise where.fail("target shape", f"dims must be integers >= 0 or a single -1, got {want}")
    if want.count(-1) > 1:
        raise where.fail("target shape", f"at most one dim may be -1, got {want}")
    known = math.prod(d for d in want if d != -1)
    if -1 in want:
        if known == 0 or x.size % known:
            raise where.fail("element count", f"cannot reshape {x.shape} ({x.size} elements) to {want}")
        want = tuple(x.size // known if d == -1 else d for d in want)
    if math.prod(want) != x.size:
        raise where.fail("element count", f"cannot reshape {x.shape} ({x.size} elements) to {want} "
                                          f"({math.prod(want)} elements)")
    return want


def _infer(types: Sequence[TensorType], a: ReshapeAttrs, where: Where) -> Sequence[TensorType]:
    x = types[0]
    return (image_type(_target(x, a, where), x.dtype),)


def _reference(arrays: Sequence[np.ndarray], a: ReshapeAttrs) -> np.ndarray:
    return np.reshape(arrays[0], a.shape).copy()


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    """The same elements back in ``x``'s shape: ``reshape(dy, x.shape)``."""
    from cnncc.ops.reshape import ReshapeAttrs

    (dy,) = grads_out
    return [ctx.emit("reshape", [dy], ReshapeAttrs(tuple(node.inputs[0].shape)))]


# A row-major reshape: the identity to the same shape, and a chain of them is one reshape.
TRAITS = OpTraits(category=Category.SHAPE, recomputable=True, reshape=True,
                  identity_when=lambda a, x, y: x.shape == y.shape)

OP = register(OpDef(name="reshape", inputs=("x",), infer=_infer, reference=_reference, attrs=ReshapeAttrs,
                    vjp=_vjp, traits=TRAITS, doc=__doc__ or ""))
