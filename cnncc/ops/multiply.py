"""multiply: ``a * b`` elementwise with NumPy broadcasting; channel scaling such as squeeze-and-excitation's
``x̃_c = s_c · u_c`` (seed 003 L1249-1278) is ``(N, C, H, W) * (N, C, 1, 1)``.

VJP: ``da = sum_to(dy * b, a.shape)``, ``db = sum_to(dy * a, b.shape)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncc.ops.binary import register_binary


def _multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    a, b = node.inputs
    grads: list[Any] = []
    for v, other in ((a, b), (b, a)):
        g = ctx.emit("multiply", [dy, ctx.value(other)]) if ctx.needs_grad(v) else None
        grads.append(None if g is None else ctx.sum_to(g, v.shape))
    return grads


OP = register_binary("multiply", _multiply, doc=__doc__ or "", vjp=_vjp)
