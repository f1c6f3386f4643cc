"""batch_norm_grad: the backward pass of training-mode batch_norm, all three gradients at once.

Forward (training): per channel ``c``, over the ``m = N·H·W`` values of that channel (every axis but 1),
``μ = (1/m) Σ x``, the **biased** variance ``σ² = (1/m) Σ (x − μ)²``, ``x̂ = (x − μ) / sqrt(σ² + eps)``,
``y = γ x̂ + β``. Given ``dy``, with the batch statistics recomputed from ``x`` (Ioffe & Szegedy 2015, §3; PyTorch's
``batch_norm_backward`` in training mode)::

    dβ = Σ dy          dγ = Σ dy · x̂
    dx = γ / sqrt(σ² + eps) · (dy − dβ / m − x̂ · dγ / m)

The statistics depend on x, hence the two correction terms; an inference-mode batch_norm (fixed running
statistics) has the plain affine gradient ``dx = dy · γ / sqrt(running_var + eps)`` instead, which its VJP builds
from ``multiply`` (see :mod:`cnncc.ops.batch_norm`).

Operands ``x`` (N, C, ...), ``gamma`` (C,), ``dy`` (x's shape). Attributes :class:`BatchNormGradAttrs` (the
forward's ``eps``). Results ``(dx, dgamma, dbeta)`` of types x, gamma, gamma. No VJP (second derivatives are out of
scope).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import BACKWARD, OpDef, Where, register


@dataclass(frozen=True)
class BatchNormGradAttrs:
    """``eps``: the forward's (> 0, inside the square root)."""

    eps: float = 1e-5


def check_channels(x: TensorType, params: Sequence[TensorType], names: Sequence[str], where: Where) -> None:
    """x is (N, C, ...) with more than one value per channel; every per-channel operand has shape (C,)."""
    if x.rank < 2:
        raise where.fail("operand rank", f"x must be rank >= 2 (N, C, ...), got shape {x.shape}")
    c = x.shape[1]
    if any(t.shape != (c,) for t in params):
        got = ", ".join(f"{n} {t.shape}" for n, t in zip(names, params, strict=True))
        raise where.fail("parameter shape", f"{', '.join(names)} must have shape ({c},) for x of shape {x.shape}; "
                                            f"got {got}")
    if x.size // max(c, 1) <= 1:
        raise where.fail("batch statistics", f"batch statistics need more than one value per channel; x has shape "
                                             f"{x.shape}")


def batch_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel mean and biased variance of ``x`` (kept dims, x's dtype) and the count ``m``."""
    axes = (0,) + tuple(range(2, x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True, dtype=x.dtype)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True, dtype=x.dtype)
    return mean, var, x.size // x.shape[1]


def _infer(types: Sequence[TensorType], a: BatchNormGradAttrs, where: Where) -> Sequence[TensorType]:
    if not (isinstance(a.eps, int | float) and math.isfinite(a.eps) and a.eps > 0):
        raise where.fail("eps", f"eps must be a finite number > 0, got {a.eps!r}")
    x, gamma, dy = types
    require_same_float(types, ("x", "gamma", "dy"), where)
    check_channels(x, [gamma], ["gamma"], where)
    if dy.shape != x.shape:
        raise where.fail("dy shape", f"dy has shape {dy.shape} but x has shape {x.shape}; they must match")
    return (x, gamma, gamma)


def _reference(arrays: Sequence[np.ndarray], a: BatchNormGradAttrs) -> tuple[np.ndarray, ...]:
    x = arrays[0]
    gamma, dy = (np.asarray(v, dtype=x.dtype) for v in arrays[1:])
    axes = (0,) + tuple(range(2, x.ndim))
    bcast = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    mean, var, m = batch_stats(x)
    inv = 1 / np.sqrt(var + x.dtype.type(a.eps))
    xhat = (x - mean) * inv
    dbeta = np.sum(dy, axis=axes, dtype=x.dtype)
    dgamma = np.sum(dy * xhat, axis=axes, dtype=x.dtype)
    mt = x.dtype.type(m)
    dx = gamma.reshape(bcast) * inv * (dy - dbeta.reshape(bcast) / mt - xhat * (dgamma.reshape(bcast) / mt))
    return np.asarray(dx, dtype=x.dtype), dgamma, dbeta


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: BatchNormGradAttrs) -> int:
    return 12 * ins[0].size  # statistics (4), x̂ (2), the two sums (3), dx (5), per element, roughly


OP = register(OpDef(name="batch_norm_grad", inputs=("x", "gamma", "dy"), infer=_infer, reference=_reference,
                    attrs=BatchNormGradAttrs, flops=_flops, traits=BACKWARD, doc=__doc__ or ""))
