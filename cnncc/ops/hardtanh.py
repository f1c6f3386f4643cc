"""hardtanh: ``x`` clipped to ``[min_val, max_val]`` (PyTorch ``F.hardtanh``).

With the defaults ``[-1, 1]`` it is the seeds' "saturating linear [-1, 1]" (seed 004 L64-69); ``[0, 1]`` gives
the saturating linear function of seed 004 L58-63.

Derivative: 1 on ``(min_val, max_val)``, 0 elsewhere and at both clip points (PyTorch's ``hardtanh_backward``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnncc.ops.elementwise import register_unary
from cnncc.ops.registry import Where


@dataclass(frozen=True)
class HardtanhAttrs:
    """The clipping interval ``[min_val, max_val]``; ``min_val < max_val``."""

    min_val: float = -1.0
    max_val: float = 1.0


def _check(a: HardtanhAttrs, where: Where) -> None:
    if not (math.isfinite(a.min_val) and math.isfinite(a.max_val)):
        raise where.fail("hardtanh bounds", f"min_val = {a.min_val} and max_val = {a.max_val} must be finite")
    if a.min_val >= a.max_val:
        raise where.fail("hardtanh bounds", f"min_val = {a.min_val} must be less than max_val = {a.max_val}")


def _hardtanh(x: np.ndarray, a: HardtanhAttrs) -> np.ndarray:
    return np.minimum(np.maximum(x, x.dtype.type(a.min_val)), x.dtype.type(a.max_val))



def _hardtanh_derivative(x: np.ndarray, a: HardtanhAttrs) -> np.ndarray:
    return ((x > x.dtype.type(a.min_val)) & (x < x.dtype.type(a.max_val))).astype(x.dtype)


OP = register_unary("hardtanh", _hardtanh, attrs=HardtanhAttrs, flops_per_element=2, check=_check,
                    derivative=_hardtanh_derivative, doc=__doc__ or "")
