"""cross_entropy: softmax cross-entropy from logits (``torch.nn.functional.cross_entropy``).

``L_i = −log(e^{s_{y_i}} / Σ_j e^{s_j})`` (seed 004 L247-253), averaged over the batch. Operands: ``logits``
``(N, C)`` float and ``target`` either

* int64 class indices of shape ``(N,)``: ``L_i = −log_softmax(s_i)[y_i]``; or
* float probabilities / one-hot rows of shape ``(N, C)`` (Keras ``categorical_crossentropy`` with a softmax
  output, seed 000 L1024-1026; label-smoothed targets, seed 003 L944-958): ``L_i = −Σ_c t_ic ·
  log_softmax(s_i)_c``.

The log-softmax is the stable one (the row maximum is subtracted first). The result is a scalar (shape
``()``); ``reduction`` SUM sums over the batch instead of averaging. A class index outside ``[0, C)`` cannot
be caught by the shape rule: the reference raises :class:`cnncc.errors.InputError` at run time.

VJP, with ``T`` the one-hot rows of the indices or the probability target and ``c = g / N`` (``g`` for SUM):
``d logits = c (softmax(s) Σ_j T_j − T)`` (``c (softmax(s) − T)`` when rows of ``T`` sum to 1), one fused and
stable op, :mod:`cnncc.ops.cross_entropy_grad`; a probability target gets ``d target = −c log_softmax(s)``, as in
PyTorch; class indices get none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.log_softmax import LogSoftmaxAttrs
from cnncc.ops.nll import check_reduction, loss_factor, picked, reduce_loss
from cnncc.ops.operands import Reduction, dtype_name, require_float, require_rank
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register
from cnncc.ops.softmax import shifted_exp


@dataclass(frozen=True)
class CrossEntropyAttrs:
    """``reduction``: MEAN (default, divide by N) or SUM over the batch."""

    reduction: Reduction = Reduction.MEAN


def _infer(types: Sequence[TensorType], a: CrossEntropyAttrs, where: Where) -> Sequence[TensorType]:
    check_reduction(a.reduction, where)
    logits, target = types
    require_float(logits, "logits", where)
    require_rank(logits, "logits", (2,), "(N, C)", where)
    n, c = logits.shape
    indices = target.shape == (n,) and not target.dtype.is_float
    probs = target.shape == (n, c) and target.dtype == logits.dtype
    if not (indices or probs):
        raise where.fail("target", f"target must be int64 class indices of shape ({n},) or "
                                   f"{dtype_name(logits)} probabilities of shape ({n}, {c}) for logits of "
                                   f"shape {logits.shape}; got {dtype_name(target)} of shape {target.shape}")
    return (TensorType((), logits.dtype),)


def _log_softmax(s: np.ndarray) -> np.ndarray:
    shifted, _, total = shifted_exp(s, axis=1)
    return shifted - np.log(total)


def _reference(arrays: Sequence[np.ndarray], a: CrossEntropyAttrs) -> np.ndarray:
    logits, target = arrays
    logp = _log_softmax(logits)
    if target.ndim == 1:
        per_sample = -picked(logp, target, "cross_entropy")
    else:
        per_sample = -np.sum(target * logp, axis=1)
    return reduce_loss(per_sample, a.reduction, logits.dtype)


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (g,) = grads_out
    logits, target = (ctx.value(v) for v in node.inputs)
    indices = not target.dtype.is_float
    d_logits = None
    if ctx.needs_grad(node.inputs[0]):  # one fused, stable row-wise op (cross_entropy_grad)
        d_logits = ctx.emit("cross_entropy_grad", [logits, ctx.value(node.inputs[1]), g], node.attrs)
    d_target = None
    if not indices and ctx.needs_grad(node.inputs[1]):
        c = loss_factor(ctx, g, node.attrs.reduction, logits.shape[0], -1.0)
        d_target = ctx.emit("multiply", [ctx.emit("log_softmax", [logits], LogSoftmaxAttrs(1)), c])
    return [d_logits, d_target]


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: CrossEntropyAttrs) -> int:
    per_row = 2 * ins[0].size if ins[1].rank == 2 else ins[0].shape[0]
    return 4 * ins[0].size + per_row + 1


OP = register(OpDef(name="cross_entropy", inputs=("logits", "target"), infer=_infer, reference=_reference,
                    attrs=CrossEntropyAttrs, flops=_flops, vjp=_vjp, traits=OpTraits(category=Category.HEAD),
                    doc=__doc__ or ""))
