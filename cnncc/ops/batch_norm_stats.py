"""batch_norm_stats: the running-statistics update of a training-mode batch_norm (PyTorch's rule).

Per channel ``c``, over the ``m = N·H·W`` values of that channel (every axis but 1)::

    μ_B = (1/m) Σ x          s²_B = (1/(m − 1)) Σ (x − μ_B)²          (the *unbiased* variance)
    new_mean = (1 − momentum) · running_mean + momentum · μ_B
    new_var  = (1 − momentum) · running_var  + momentum · s²_B

This is what ``torch.nn.functional.batch_norm(..., training=True, momentum=momentum)`` writes into its running
buffers; the normalisation itself uses the *biased* variance (:mod:`cnncc.ops.batch_norm`). A training step runs
this op beside the forward batch_norm and stores the results as the new running statistics.

Operands ``x`` (N, C, ...), ``running_mean`` (C,), ``running_var`` (C,). Attributes :class:`BatchNormStatsAttrs`.
Results ``(new_mean, new_var)``, each of type (C,). It is not differentiated (no VJP: the running statistics are
not on any gradient path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.batch_norm_grad import batch_stats, check_channels
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import OpDef, OpTraits, Role, Where, register


@dataclass(frozen=True)
class BatchNormStatsAttrs:
    """``momentum`` in [0, 1], PyTorch's convention (the weight of the batch statistic)."""

    momentum: float = 0.1


def _infer(types: Sequence[TensorType], a: BatchNormStatsAttrs, where: Where) -> Sequence[TensorType]:
    ok = isinstance(a.momentum, int | float) and not isinstance(a.momentum, bool)
    if not ok or not 0.0 <= a.momentum <= 1.0:
        raise where.fail("momentum", f"momentum must be in [0, 1], got {a.momentum!r}")
    names = ("x", "running_mean", "running_var")
    require_same_float(types, names, where)
    check_channels(types[0], types[1:], names[1:], where)
    return (types[1], types[2])


def _reference(arrays: Sequence[np.ndarray], a: BatchNormStatsAttrs) -> tuple[np.ndarray, np.ndarray]:
    x = arrays[0]
    old_mean, old_var = (np.asarray(v, dtype=x.dtype) for v in arrays[1:])
    mean, var, m = batch_stats(x)
    unbiased = var.reshape(-1) * x.dtype.type(m / (m - 1))
    mom = x.dtype.type(a.momentum)
    keep = x.dtype.type(1.0 - a.momentum)
    return (np.asarray(keep * old_mean + mom * mean.reshape(-1), dtype=x.dtype),
            np.asarray(keep * old_var + mom * unbiased, dtype=x.dtype))


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: BatchNormStatsAttrs) -> int:
    return 4 * ins[0].size + 6 * outs[0].size


OP = register(OpDef(name="batch_norm_stats", inputs=("x", "running_mean", "running_var"), infer=_infer,
                    reference=_reference, attrs=BatchNormStatsAttrs, flops=_flops,
                    traits=OpTraits(role=Role.STATISTICS), doc=__doc__ or ""))
