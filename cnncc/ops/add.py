"""add: ``a + b`` elementwise with NumPy broadcasting; the residual (skip) connection of ResNet
(seed 001 L2666-2675: "Last layer before addition must have the same number of filters as the input").

VJP: ``da = sum_to(dy, a.shape)``, ``db = sum_to(dy, b.shape)`` (summed over the axes broadcasting stretched).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncc.ops.binary import register_binary
from cnncc.ops.registry import Category, Elementwise, EpilogueRole, OpTraits


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    return [ctx.sum_to(dy, v.shape) if ctx.needs_grad(v) else None for v in node.inputs]


# A same-shape add after a convolution is a residual connection its epilogue can take.
OP = register_binary("add", _add, doc=__doc__ or "", vjp=_vjp,
                     traits=OpTraits(category=Category.BINARY, elementwise=Elementwise.BINARY,
                                     epilogue=EpilogueRole.RESIDUAL))
