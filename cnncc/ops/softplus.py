"""softplus: ``ln(1 + e^x)``, the "smoothed ReLU" (seed 000 L561-569; seed 004 L207-212), with PyTorch's
attributes.

Exactly ``torch.nn.functional.softplus(x, beta, threshold)``: ``x`` where ``beta * x > threshold``, otherwise
``log1p(exp(beta * x)) / beta``. The second branch is computed stably as ``(max(bx, 0) + log1p(e^-|bx|)) /
beta``, so it never overflows even for a large ``threshold``.

Derivative: 1 where ``beta * x > threshold``, otherwise ``sigmoid(beta * x)`` (PyTorch's ``softplus_backward``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnncc.ops.elementwise import register_unary
from cnncc.ops.registry import Where


@dataclass(frozen=True)
class SoftplusAttrs:
    """``beta``: sharpness (> 0); ``threshold``: above ``beta * x > threshold`` the op is the identity."""

    beta: float = 1.0
    threshold: float = 20.0


def _check(a: SoftplusAttrs, where: Where) -> None:
    if not (math.isfinite(a.beta) and a.beta > 0):
        raise where.fail("beta", f"beta must be a finite number > 0, got {a.beta}")
    if math.isnan(a.threshold):
        raise where.fail("threshold", f"threshold must be a number, got {a.threshold}")


def _softplus(x: np.ndarray, a: SoftplusAttrs) -> np.ndarray:
    beta = x.dtype.type(a.beta)
    bx = beta * x
    smooth = (np.maximum(bx, x.dtype.type(0)) + np.log1p(np.exp(-np.abs(bx)))) / beta
    return np.where(bx > x.dtype.type(a.threshold), x, smooth)



def _softplus_derivative(x: np.ndarray, a: SoftplusAttrs) -> np.ndarray:
    bx = x.dtype.type(a.beta) * x
    e = np.exp(-np.abs(bx))
    one = x.dtype.type(1)
    smooth = np.where(bx >= 0, one / (one + e), e / (one + e))  # sigmoid(beta x), stable
    return np.where(bx > x.dtype.type(a.threshold), one, smooth)


OP = register_unary("softplus", _softplus, attrs=SoftplusAttrs, flops_per_element=6, check=_check,
                    derivative=_softplus_derivative, doc=__doc__ or "")
