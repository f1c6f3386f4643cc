"""batch_norm: per-channel normalisation over axis 1, ``y = (x - μ) / sqrt(σ² + eps) · γ + β``.

Operands: ``x`` of shape ``(N, C, ...)`` (``(N, C)`` after a dense layer, ``(N, C, H, W)`` after a
convolution) and ``gamma``, ``beta``, ``running_mean``, ``running_var``, each of shape ``(C,)``. Statistics
are per channel ``c``, over every other axis (N, and H, W for images).

* Inference (``training=False``): ``μ, σ² = running_mean, running_var`` (the seeds do not cover inference;
  this is PyTorch's eval mode).
* Training (``training=True``): the batch statistics of seed 003 L380-395: ``μ_B = (1/m) Σ x_i`` and the
  **biased** variance ``σ_B² = (1/m) Σ (x_i − μ_B)²``, ``m = N·H·W``, with ``eps`` inside the square root; the
  running operands are not read. The reference returns only ``y``: updating the running statistics belongs to
  the training issue, which uses ``momentum`` in PyTorch's convention ``new = (1 − momentum) · old + momentum
  · batch`` (PyTorch updates ``running_var`` with the *unbiased* batch variance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import OpDef, Where, register

OPERANDS = ("x", "gamma", "beta", "running_mean", "running_var")


@dataclass(frozen=True)
class BatchNormAttrs:
    """``eps`` (> 0, inside the sqrt); ``momentum`` in [0, 1] (running-stat update, PyTorch convention);
    ``training``: normalise with the batch statistics instead of the running ones."""

    eps: float = 1e-5
    momentum: float = 0.1
    training: bool = False


def _check_attrs(a: BatchNormAttrs, where: Where) -> None:
    if not (math.isfinite(a.eps) and a.eps > 0):
        raise where.fail("eps", f"eps must be a finite number > 0, got {a.eps}")
    if not 0.0 <= a.momentum <= 1.0:
        raise where.fail("momentum", f"momentum must be in [0, 1], got {a.momentum}")
    if not isinstance(a.training, bool):
        raise where.fail("training", f"training must be a bool, got {a.training!r}")


def _infer(types: Sequence[TensorType], a: BatchNormAttrs, where: Where) -> Sequence[TensorType]:
    _check_attrs(a, where)
    require_same_float(types, OPERANDS, where)
    x = types[0]
    if x.rank < 2:
        raise where.fail("operand rank", f"x must be rank >= 2 (N, C, ...), got shape {x.shape}")
    c = x.shape[1]
    if any(t.shape != (c,) for t in types[1:]):
        got = ", ".join(f"{n} {t.shape}" for n, t in zip(OPERANDS[1:], types[1:], strict=True))
        raise where.fail("parameter shape", f"gamma, beta, running_mean and running_var must have shape "
                                            f"({c},) for x of shape {x.shape}; got {got}")
    if a.training and x.size // max(c, 1) <= 1:
        raise where.fail("batch statistics", "training mode needs more than one value per channel; x has "
                                             f"shape {x.shape}")
    return (x,)


def _reference(arrays: Sequence[np.ndarray], a: BatchNormAttrs) -> np.ndarray:
    x, gamma, beta, running_mean, running_var = arrays
    axes = (0,) + tuple(range(2, x.ndim))
    bcast = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if a.training:
        mean = np.mean(x, axis=axes, keepdims=True)
        var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)  # biased: 1/m
    else:
        mean, var = running_mean.reshape(bcast), running_var.reshape(bcast)
    eps = x.dtype.type(a.eps)
    y = (x - mean) / np.sqrt(var + eps) * gamma.reshape(bcast) + beta.reshape(bcast)
    return np.asarray(y, dtype=x.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: BatchNormAttrs) -> int:
    per_element = 8 if a.training else 4  # (sub, div, mul, add) + training's (sum, sub, square, sum)
    return per_element * outs[0].size


OP = register(OpDef(name="batch_norm", inputs=OPERANDS, infer=_infer, reference=_reference,
                    attrs=BatchNormAttrs, flops=_flops, doc=__doc__ or ""))
