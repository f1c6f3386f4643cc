"""relu6: ``min(max(x, 0), 6)``, the activation of MobileNetV2's inverted residual blocks.

The seeds name it only ("ReLU6 activation function", figure only, no formula: seed 003 L1122, L1153-1155); the
formula is PyTorch's ``torch.nn.functional.relu6``.

Derivative: 1 on ``(0, 6)``, 0 elsewhere, 0 at both clip points too (PyTorch's ``hardtanh_backward``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnncc.ops.elementwise import register_unary


def _relu6(x: np.ndarray, attrs: Any) -> np.ndarray:
    return np.minimum(np.maximum(x, x.dtype.type(0)), x.dtype.type(6))



def _relu6_derivative(x: np.ndarray, attrs: Any) -> np.ndarray:
    return ((x > 0) & (x < 6)).astype(x.dtype)


OP = register_unary("relu6", _relu6, derivative=_relu6_derivative, flops_per_element=2, doc=__doc__ or "")
