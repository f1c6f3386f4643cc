"""one_hot: rows of zeros with a 1 at each class index, ``y[i, target[i]] = 1``, of ``like``'s type ``(N, C)``.

Operands: ``target`` int64 ``(N,)`` and ``like`` float ``(N, C)``, whose type (and so the run's float dtype) the
result takes; ``like``'s data is not read. The VJPs of ``nll`` and ``cross_entropy`` with class indices use it. A
class index outside ``[0, C)`` raises :class:`cnncc.errors.InputError` at run time, as the losses do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.nll import picked
from cnncc.ops.operands import require_float, require_int64, require_rank
from cnncc.ops.registry import NoAttrs, OpDef, Where, register


def _infer(types: Sequence[TensorType], a: NoAttrs, where: Where) -> Sequence[TensorType]:
    target, like = types
    require_int64(target, "target", where)
    require_float(like, "like", where)
    require_rank(like, "like", (2,), "(N, C)", where)
    if target.shape != (like.shape[0],):
        raise where.fail("target shape", f"target must have shape ({like.shape[0]},) for like of shape "
                                         f"{like.shape}, got {target.shape}")
    return (like,)


def _reference(arrays: Sequence[np.ndarray], a: NoAttrs) -> np.ndarray:
    target, like = arrays
    out = np.zeros(like.shape, like.dtype)
    picked(out, target, "one_hot")  # range check with the losses' message
    out[np.arange(like.shape[0]), target] = 1
    return out


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[None]:
    return [None, None]  # piecewise constant in target (integers), independent of like's values


OP = register(OpDef(name="one_hot", inputs=("target", "like"), infer=_infer, reference=_reference, vjp=_vjp,
                    doc=__doc__ or ""))
