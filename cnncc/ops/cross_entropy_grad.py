"""cross_entropy_grad: the gradient of softmax cross-entropy with respect to the logits, as one fused op.

For ``L = cross_entropy(s, target)`` and the incoming scalar gradient ``g`` (``dL`` of the loss)::

    d s = c · (softmax(s) · Σ_j T_j − T),    c = g / N (reduction MEAN) or g (SUM)

with ``T`` the one-hot rows of int64 class indices ``(N,)`` or the float probability rows ``(N, C)``; for one-hot
or normalised rows ``Σ_j T_j = 1`` and this is the familiar ``c · (softmax(s) − T)``. The softmax is the stable
one (the row maximum is subtracted before ``exp``), so large logits neither overflow nor lose the gradient: one
row-wise pass instead of log-softmax, one-hot, multiply and the log-softmax VJP. The CPU kernel is one row-wise
loop (codegen/kernels/rowwise.py). Operands ``(logits, target, g)``; attributes :class:`CrossEntropyAttrs`;
result of the logits' shape and dtype. A backward op: no VJP of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.cross_entropy import OP as CROSS_ENTROPY
from cnncc.ops.cross_entropy import CrossEntropyAttrs
from cnncc.ops.nll import picked
from cnncc.ops.operands import Reduction
from cnncc.ops.registry import BACKWARD, OpDef, Where, register
from cnncc.ops.softmax import shifted_exp


def _infer(types: Sequence[TensorType], a: CrossEntropyAttrs, where: Where) -> Sequence[TensorType]:
    logits, target, g = types
    CROSS_ENTROPY.infer([logits, target], a, where)  # the forward op's rules for logits and target
    if g.size != 1 or g.dtype != logits.dtype:
        raise where.fail("loss gradient", f"g must be one {logits.dtype.name.lower()} value (the loss's gradient), "
                                          f"got {g.dtype.name.lower()} of shape {g.shape}")
    return (logits,)


def _reference(arrays: Sequence[np.ndarray], a: CrossEntropyAttrs) -> np.ndarray:
    logits, target, g = arrays
    n, c = logits.shape
    _, e, total = shifted_exp(logits, axis=1)
    softmax = e / total
    if target.ndim == 1:
        t = np.zeros_like(logits)
        picked(t, target, "cross_entropy_grad")  # the same error for a label out of range
        t[np.arange(n), target] = 1
    else:
        t = target
    scale = g.reshape(()) / (logits.dtype.type(n) if a.reduction is Reduction.MEAN else 1)
    return np.asarray(scale * (softmax * t.sum(axis=1, keepdims=True) - t), dtype=logits.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: CrossEntropyAttrs) -> int:
    return 6 * ins[0].size


OP = register(OpDef(name="cross_entropy_grad", inputs=("logits", "target", "g"), infer=_infer, reference=_reference,
                    attrs=CrossEntropyAttrs, flops=_flops, traits=BACKWARD, doc=__doc__ or ""))
