"""sigmoid: the logistic function ``1 / (1 + e^-x)`` (seed 000 L485-510; seed 004 L36-39 with slope 1).

Numerically stable for any ``x``: with ``e = e^-|x|`` (never above 1, so it cannot overflow) the result is
``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` for ``x < 0``; ``sigmoid(±1000)`` is exactly 1 and 0.

Derivative: ``s (1 - s)`` with ``s = sigmoid(x)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnncc.ops.elementwise import register_unary


def _sigmoid(x: np.ndarray, attrs: Any) -> np.ndarray:
    e = np.exp(-np.abs(x))
    one = x.dtype.type(1)
    return np.where(x >= 0, one / (one + e), e / (one + e))



def _sigmoid_derivative(x: np.ndarray, attrs: Any) -> np.ndarray:
    s = _sigmoid(x, attrs)
    return s * (x.dtype.type(1) - s)


OP = register_unary("sigmoid", _sigmoid, derivative=_sigmoid_derivative, flops_per_element=4, doc=__doc__ or "")
