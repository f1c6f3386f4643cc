"""multiply: ``a * b`` elementwise with NumPy broadcasting; channel scaling such as squeeze-and-excitation's
``x̃_c = s_c · u_c`` (seed 003 L1249-1278) is ``(N, C, H, W) * (N, C, 1, 1)``.
"""

from __future__ import annotations

import numpy as np

from cnncc.ops.binary import register_binary


def _multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


OP = register_binary("multiply", _multiply, doc=__doc__ or "")
