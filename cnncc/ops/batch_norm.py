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
  · batch`` (PyTorch updates ``running_var`` with the *unbiased* batch variance): that update is the op
  ``batch_norm_stats`` (:mod:`cnncc.ops.batch_norm_stats`).

VJP. Training: ``(dx, dγ, dβ) = batch_norm_grad(x, γ, dy)`` (:mod:`cnncc.ops.batch_norm_grad`, the statistics'
dependence on x included); the running operands are not read, so they get no gradient. Inference, an affine map
per channel with ``s = γ / sqrt(σ² + eps)``, written with batch_norm itself (inference mode, same eps) so that no
square-root op is needed: ``dx = dy · s = batch_norm(dy, γ, 0, 0, σ²)``, ``x̂ = batch_norm(x, 1, 0, μ, σ²)``,
``dγ = Σ dy · x̂``, ``dβ = Σ dy``, ``dμ = −Σ dx`` and ``dσ² = −½ Σ dy · x̂ · γ / (σ² + eps)`` (sums over every
axis but 1, through ``sum_to`` and ``reshape``; each is built only when that operand needs a gradient).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register

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


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    from cnncc.ops.batch_norm_grad import BatchNormGradAttrs
    from cnncc.ops.reshape import ReshapeAttrs

    (dy,) = grads_out
    a: BatchNormAttrs = node.attrs
    x, gamma, beta, mean, var = node.inputs
    if a.training:
        if not any(ctx.needs_grad(v) for v in (x, gamma, beta)):
            return [None] * 5
        dx, dgamma, dbeta = ctx.emit_multi("batch_norm_grad", [ctx.value(x), ctx.value(gamma), dy],
                                           BatchNormGradAttrs(a.eps))
        return [dx if ctx.needs_grad(x) else None, dgamma if ctx.needs_grad(gamma) else None,
                dbeta if ctx.needs_grad(beta) else None, None, None]
    c = x.shape[1]
    keep = (1, c) + (1,) * (x.type.rank - 2)
    infer = BatchNormAttrs(a.eps, a.momentum, False)
    vx, vg, vm, vv = ctx.value(x), ctx.value(gamma), ctx.value(mean), ctx.value(var)
    zeros, ones = ctx.zeros_like(vg), ctx.ones_like(vg)

    def channel_sum(t: Any) -> Any:
        return ctx.emit("reshape", [ctx.sum_to(t, keep)], ReshapeAttrs((c,)))

    def scaled(t: Any) -> Any:  # t * gamma / sqrt(var + eps)
        return ctx.emit("batch_norm", [t, vg, zeros, zeros, vv], infer)

    grads: list[Any] = [None] * 5
    dx = scaled(dy) if ctx.needs_grad(x) or ctx.needs_grad(mean) else None
    grads[0] = dx if ctx.needs_grad(x) else None
    if ctx.needs_grad(mean):
        grads[3] = ctx.scale(channel_sum(dx), -1.0)
    if ctx.needs_grad(gamma) or ctx.needs_grad(var):
        dy_xhat = ctx.emit("multiply", [dy, ctx.emit("batch_norm", [vx, ones, zeros, vm, vv], infer)])
        if ctx.needs_grad(gamma):
            grads[1] = channel_sum(dy_xhat)
        if ctx.needs_grad(var):  # dy · x̂ · γ / (σ² + eps): scaled by γ/sqrt, then by 1/sqrt
            over = ctx.emit("batch_norm", [scaled(dy_xhat), ones, zeros, zeros, vv], infer)
            grads[4] = ctx.scale(channel_sum(over), -0.5)
    if ctx.needs_grad(beta):
        grads[2] = channel_sum(dy)
    return grads


OP = register(OpDef(name="batch_norm", inputs=OPERANDS, infer=_infer, reference=_reference,
                    attrs=BatchNormAttrs, flops=_flops, vjp=_vjp,
                    traits=OpTraits(category=Category.NORM, recomputable=True), doc=__doc__ or ""))
