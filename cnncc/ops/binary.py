"""The one mechanism behind binary elementwise ops (add, multiply) with NumPy broadcasting.

Operands ``a`` and ``b`` of one float dtype; shapes broadcast as in NumPy and PyTorch (align trailing axes, a
size-1 axis stretches), e.g. ``(N, C, H, W) * (1, C, 1, 1)`` or ``(N, C, H, W) * (C, 1, 1)`` scales channels.
The result has the broadcast shape and the layout given by :func:`cnncc.ops.operands.common_layout` (that of
the higher-rank operand; rank 4 is NCHW).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import common_layout, require_same_float
from cnncc.ops.registry import Category, Elementwise, NoAttrs, OpDef, OpTraits, Where, register


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...], where: Where) -> tuple[int, ...]:
    """NumPy's broadcast of two shapes, or a :class:`ShapeError` naming both."""
    rank = max(len(a), len(b))
    pa, pb = (1,) * (rank - len(a)) + a, (1,) * (rank - len(b)) + b
    out = []
    for da, db in zip(pa, pb, strict=True):
        if da != db and 1 not in (da, db):
            raise where.fail("broadcast", f"operands do not broadcast: a has shape {a} and b has shape {b}")
        out.append(db if da == 1 else da)
    return tuple(out)


def _infer(types: Sequence[TensorType], attrs: NoAttrs, where: Where) -> Sequence[TensorType]:
    a, b = types
    require_same_float(types, ("a", "b"), where)
    shape = broadcast_shape(a.shape, b.shape, where)
    return (TensorType(shape, a.dtype, common_layout(types, ("a", "b"), shape, where)),)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: NoAttrs) -> int:
    return outs[0].size


BINARY = OpTraits(category=Category.BINARY, elementwise=Elementwise.BINARY)


def register_binary(name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], doc: str,
                    vjp: Callable[[Any, Any, Sequence[Any]], Sequence[Any]] | None = None,
                    traits: OpTraits = BINARY) -> OpDef:
    """Register ``y = fn(a, b)`` with broadcasting, one flop per output element; ``vjp`` and ``traits`` as in the
    registry (binary elementwise unless ``traits`` says more)."""

    def reference(arrays: Sequence[np.ndarray], attrs: NoAttrs) -> np.ndarray:
        a, b = arrays
        return np.asarray(fn(a, b), dtype=a.dtype)

    return register(OpDef(name=name, inputs=("a", "b"), infer=_infer, reference=reference, flops=_flops,
                          vjp=vjp, traits=traits, doc=doc))
