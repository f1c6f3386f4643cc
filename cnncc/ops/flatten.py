"""flatten: merge the axes ``start_dim..`` into one, ``(N, C, H, W) -> (N, C*H*W)`` for ``start_dim = 1``.

Element order: row-major over the NCHW tensor, i.e. exactly ``torch.flatten(x, start_dim)``: the flat index of
``x[n, c, h, w]`` is ``(c*H + h)*W + w``. The seeds never fix this order (seed 000 L1004-1007 Keras
``Flatten()``; seed 003 L55 ``flatten(x, 1)``; seed 001 L2165 "unrolling of the maps").

Keras ``channels_last`` models flatten an NHWC tensor, flat index ``(h*W + w)*C + c``. cnncc graphs are NCHW
(an NHWC graph input is turned into NCHW by a ``transpose`` node at the graph edge, added by the frontend), so
the rows of the Dense kernel that follows a Keras ``Flatten`` must be permuted from HWC order to CHW order
when its weights are imported; flattening here always follows the NCHW order.

The result is ``PLAIN``: it is no longer an image tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import Layout, TensorType
from cnncc.ops.operands import normalize_axis
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register


@dataclass(frozen=True)
class FlattenAttrs:
    """``start_dim``: the first axis merged (negative counts from the end); every later axis is merged too."""

    start_dim: int = 1


def _infer(types: Sequence[TensorType], a: FlattenAttrs, where: Where) -> Sequence[TensorType]:
    x = types[0]
    if x.rank == 0:
        raise where.fail("operand rank", f"x must have rank >= 1, got shape {x.shape}")
    start = normalize_axis(a.start_dim, x.rank, where, "start_dim")
    shape = x.shape[:start] + (math.prod(x.shape[start:]),)
    return (TensorType(shape, x.dtype, Layout.PLAIN),)


def _reference(arrays: Sequence[np.ndarray], a: FlattenAttrs) -> np.ndarray:
    x = arrays[0]
    start = a.start_dim % x.ndim
    return np.ascontiguousarray(x).reshape(x.shape[:start] + (-1,)).copy()


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    """The same elements back in ``x``'s shape: ``reshape(dy, x.shape)``."""
    from cnncc.ops.reshape import ReshapeAttrs

    (dy,) = grads_out
    return [ctx.emit("reshape", [dy], ReshapeAttrs(tuple(node.inputs[0].shape)))]


# A row-major reshape (as cnncc.ops.reshape): the identity when nothing is flattened.
TRAITS = OpTraits(category=Category.SHAPE, recomputable=True, reshape=True,
                  identity_when=lambda a, x, y: x.shape == y.shape)

OP = register(OpDef(name="flatten", inputs=("x",), infer=_infer, reference=_reference, attrs=FlattenAttrs,
                    vjp=_vjp, traits=TRAITS, doc=__doc__ or ""))
