"""elu: ``x`` for ``x > 0``, ``alpha * (e^x - 1)`` for ``x <= 0`` (seed 000 L485-499 table; seed 003
L718-723).

``e^x - 1`` is computed with ``expm1`` (accurate near 0) on ``min(x, 0)`` so the unused branch never
overflows.

Derivative: 1 for ``x > 0``, ``alpha * e^x`` for ``x <= 0`` (``alpha`` at 0, as PyTorch's ``elu_backward``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnncc.ops.elementwise import register_unary
from cnncc.ops.registry import Where


@dataclass(frozen=True)
class EluAttrs:
    """``alpha``: the saturation value ``-alpha`` reached for ``x -> -inf``."""

    alpha: float = 1.0


def _check(a: EluAttrs, where: Where) -> None:
    if not math.isfinite(a.alpha):
        raise where.fail("alpha", f"alpha must be finite, got {a.alpha}")


def _elu(x: np.ndarray, a: EluAttrs) -> np.ndarray:
    alpha = x.dtype.type(a.alpha)
    neg = alpha * np.expm1(np.minimum(x, x.dtype.type(0)))
    return np.where(x > 0, x, neg)



def _elu_derivative(x: np.ndarray, a: EluAttrs) -> np.ndarray:
    return np.where(x > 0, x.dtype.type(1), x.dtype.type(a.alpha) * np.exp(np.minimum(x, x.dtype.type(0))))


OP = register_unary("elu", _elu, attrs=EluAttrs, flops_per_element=3, check=_check,
                    derivative=_elu_derivative, doc=__doc__ or "")
