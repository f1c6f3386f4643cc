"""relu: ``max(0, x)`` (seed 000 L523-573).

Derivative: 1 for ``x > 0``, 0 for ``x <= 0``; at 0 it is taken as 0, as in PyTorch (the seeds use 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnncc.ops.elementwise import register_unary


def _relu(x: np.ndarray, attrs: Any) -> np.ndarray:
    return np.maximum(x, 0)



def _relu_derivative(x: np.ndarray, attrs: Any) -> np.ndarray:
    return (x > 0).astype(x.dtype)  # 0 at x = 0, as PyTorch


OP = register_unary("relu", _relu, derivative=_relu_derivative, doc=__doc__ or "")
