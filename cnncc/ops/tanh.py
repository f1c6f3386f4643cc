"""tanh: ``(e^x - e^-x) / (e^x + e^-x)`` (seed 000 L485-499, L514-519), computed by ``numpy.tanh``.

Not the seeds' "tangent sigmoid" ``(1 - e^-x)/(1 + e^-x)`` of seed 004 L43-46, which equals ``tanh(x/2)``.

Derivative: ``1 - tanh(x)^2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnncc.ops.elementwise import register_unary


def _tanh(x: np.ndarray, attrs: Any) -> np.ndarray:
    return np.tanh(x)



def _tanh_derivative(x: np.ndarray, attrs: Any) -> np.ndarray:
    t = np.tanh(x)
    return x.dtype.type(1) - t * t


OP = register_unary("tanh", _tanh, derivative=_tanh_derivative, flops_per_element=5, doc=__doc__ or "")
