"""transpose: permute the axes, ``y.shape[i] = x.shape[perm[i]]`` (``numpy.transpose`` / ``torch.permute``).

The frontend uses it at the graph edge to turn an NHWC input (Keras ``channels_last``) into the NCHW tensors
the rest of the graph works on. Layout of the result:

* NHWC input, ``perm == (0, 3, 1, 2)``: NCHW;
* NCHW input, ``perm == (0, 2, 3, 1)``: NHWC;
* the identity ``perm``: the input's layout;
* anything else: PLAIN (an arbitrary permutation of an image tensor is not an image tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import Layout, TensorType
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


@dataclass(frozen=True)
class TransposeAttrs:
    """``perm``: a permutation of ``range(rank)``; output axis ``i`` is input axis ``perm[i]``."""

    perm: tuple[int, ...]


def _layout(x: TensorType, perm: tuple[int, ...]) -> Layout:
    if perm == tuple(range(x.rank)):
        return x.layout
    if x.layout is Layout.NHWC and perm == NHWC_TO_NCHW:
        return Layout.NCHW
    if x.layout is Layout.NCHW and perm == NCHW_TO_NHWC:
        return Layout.NHWC
    return Layout.PLAIN


def _infer(types: Sequence[TensorType], a: TransposeAttrs, where: Where) -> Sequence[TensorType]:
    x = types[0]
    perm = tuple(a.perm)
    ok = all(isinstance(p, int) and not isinstance(p, bool) for p in perm)
    if not ok or sorted(perm) != list(range(x.rank)):
        raise where.fail("perm", f"perm must be a permutation of range({x.rank}) for x of shape {x.shape}, "
                                 f"got {perm}")
    shape = tuple(x.shape[p] for p in perm)
    return (TensorType(shape, x.dtype, _layout(x, perm)),)


def _reference(arrays: Sequence[np.ndarray], a: TransposeAttrs) -> np.ndarray:
    return np.transpose(arrays[0], a.perm).copy()


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    """The inverse permutation: ``transpose(dy, argsort(perm))``."""
    (dy,) = grads_out
    perm = tuple(node.attrs.perm)
    inverse = tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
    return [ctx.emit("transpose", [dy], TransposeAttrs(inverse))]


# The identity permutation computes nothing.
TRAITS = OpTraits(category=Category.SHAPE, identity_when=lambda a, x, y: a.perm == tuple(range(len(a.perm))))

OP = register(OpDef(name="transpose", inputs=("x",), infer=_infer, reference=_reference, attrs=TransposeAttrs,
                    vjp=_vjp, traits=TRAITS, doc=__doc__ or ""))
