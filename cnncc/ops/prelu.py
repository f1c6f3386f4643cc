"""prelu: ``x`` for ``x >= 0``, ``alpha_c * x`` for ``x < 0``, with a learned slope per channel (seed 000
L485-499).

Operands: ``x`` of rank >= 1 and ``alpha`` of shape ``(1,)`` (one slope shared by every channel) or ``(C,)``
with ``C = x.shape[1]`` (one slope per channel, broadcast over axis 1), as in ``torch.nn.functional.prelu``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import NoAttrs, OpDef, Where, register


def _infer(types: Sequence[TensorType], attrs: NoAttrs, where: Where) -> Sequence[TensorType]:
    x, alpha = types
    require_same_float(types, ("x", "alpha"), where)
    if x.rank == 0:
        raise where.fail("operand rank", f"x must have rank >= 1, got shape {x.shape}")
    if alpha.shape == (1,):
        return (x,)
    if x.rank >= 2 and alpha.shape == (x.shape[1],):
        return (x,)
    channels = f"(1,) or ({x.shape[1]},)" if x.rank >= 2 else "(1,)"
    raise where.fail("alpha shape", f"alpha must have shape {channels} for x of shape {x.shape}, "
                                    f"got {alpha.shape}")


def _reference(arrays: Sequence[np.ndarray], attrs: NoAttrs) -> np.ndarray:
    x, alpha = arrays
    a = alpha.reshape((1, alpha.size) + (1,) * (x.ndim - 2)) if alpha.size > 1 else alpha.reshape(())
    out = np.where(x >= 0, x, a * x)
    return np.asarray(out, dtype=x.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: NoAttrs) -> int:
    return 2 * outs[0].size


OP = register(OpDef(name="prelu", inputs=("x", "alpha"), infer=_infer, reference=_reference, flops=_flops,
                    doc=__doc__ or ""))
