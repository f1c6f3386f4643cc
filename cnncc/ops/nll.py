"""nll: negative log-likelihood of class indices, ``mean_i −log_probs[i, target[i]]``
(``torch.nn.functional.nll_loss``).

The loss paired with PyTorch's ``LogSoftmax(dim=1)`` output in seed 003's LeNet (L31, L62; no loss is written
in that seed). Operands: ``log_probs`` ``(N, C)`` float and ``target`` ``(N,)`` int64. The result is a scalar
(shape ``()``) in ``log_probs``'s dtype; ``reduction`` SUM sums over the batch instead of averaging.

Class indices are data, so their range cannot be checked by the shape rule: the reference raises
:class:`cnncc.errors.InputError` at run time for a label outside ``[0, C)`` (PyTorch's ``ignore_index`` is not
supported).

VJP: ``d log_probs = -g * one_hot(target) / N`` (``/ N`` for MEAN only) with ``g`` the scalar gradient of the
loss; integer labels get no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.errors import InputError
from cnncc.ir.types import TensorType
from cnncc.ops.operands import Reduction, require_float, require_int64, require_rank
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register


@dataclass(frozen=True)
class NllAttrs:
    """``reduction``: MEAN (default, divide by N) or SUM over the batch."""

    reduction: Reduction = Reduction.MEAN


def picked(log_probs: np.ndarray, target: np.ndarray, op: str) -> np.ndarray:
    """``log_probs[i, target[i]]`` for every ``i``, or an :class:`InputError` naming the first bad label."""
    n, c = log_probs.shape
    bad = np.flatnonzero((target < 0) | (target >= c))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{op}: target[{i}] = {int(target[i])} is not a class index in [0, {c}) "
                         f"for {c} classes")
    return log_probs[np.arange(n), target]


def reduce_loss(per_sample: np.ndarray, reduction: Reduction, dtype: np.dtype) -> np.ndarray:
    """The scalar loss: mean or sum of ``per_sample``, as a 0-d array of ``dtype``."""
    total = np.sum(per_sample, dtype=dtype)
    if reduction is Reduction.MEAN:
        total = total / dtype.type(per_sample.size)
    return np.asarray(total, dtype=dtype)


def check_reduction(reduction: object, where: Where) -> None:
    if not isinstance(reduction, Reduction):
        raise where.fail("reduction", f"reduction must be a Reduction (MEAN or SUM), got {reduction!r}")


def _infer(types: Sequence[TensorType], a: NllAttrs, where: Where) -> Sequence[TensorType]:
    check_reduction(a.reduction, where)
    lp, target = types
    require_float(lp, "log_probs", where)
    require_int64(target, "target", where)
    require_rank(lp, "log_probs", (2,), "(N, C)", where)
    if target.shape != (lp.shape[0],):
        raise where.fail("target shape", f"target must have shape ({lp.shape[0]},) for log_probs of shape "
                                         f"{lp.shape}, got {target.shape}")
    return (TensorType((), lp.dtype),)


def loss_factor(ctx: Any, g: Any, reduction: Reduction, count: int, sign: float) -> Any:
    """``sign * g / count`` for MEAN, ``sign * g`` for SUM: the scalar every per-element gradient is scaled by."""
    return ctx.scale(g, sign / count if reduction is Reduction.MEAN else sign)


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (g,) = grads_out
    lp, target = (ctx.value(v) for v in node.inputs)
    c = loss_factor(ctx, g, node.attrs.reduction, lp.shape[0], -1.0)
    return [ctx.emit("multiply", [ctx.emit("one_hot", [target, lp]), c]), None]


def _reference(arrays: Sequence[np.ndarray], a: NllAttrs) -> np.ndarray:
    lp, target = arrays
    return reduce_loss(-picked(lp, target, "nll"), a.reduction, lp.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: NllAttrs) -> int:
    return ins[1].size + 1


OP = register(OpDef(name="nll", inputs=("log_probs", "target"), infer=_infer, reference=_reference,
                    attrs=NllAttrs, flops=_flops, vjp=_vjp, traits=OpTraits(category=Category.HEAD), doc=__doc__ or ""))
