"""leaky_relu: ``x`` for ``x >= 0``, ``negative_slope * x`` for ``x < 0`` (PyTorch ``F.leaky_relu``).

The seeds give the heading only and no slope value (seed 003 L718-723); the default 0.01 is PyTorch's.

Derivative: 1 for ``x > 0``, ``negative_slope`` for ``x <= 0`` (at 0 too, as PyTorch's ``leaky_relu_backward``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnncc.ops.elementwise import register_unary
from cnncc.ops.registry import Where


@dataclass(frozen=True)
class LeakyReluAttrs:
    """``negative_slope``: the factor applied to negative inputs."""

    negative_slope: float = 0.01


def _check(a: LeakyReluAttrs, where: Where) -> None:
    if not math.isfinite(a.negative_slope):
        raise where.fail("negative_slope", f"negative_slope must be finite, got {a.negative_slope}")


def _leaky_relu(x: np.ndarray, a: LeakyReluAttrs) -> np.ndarray:
    slope = x.dtype.type(a.negative_slope)
    return np.where(x >= 0, x, slope * x)



def _leaky_relu_derivative(x: np.ndarray, a: LeakyReluAttrs) -> np.ndarray:
    return np.where(x > 0, x.dtype.type(1), x.dtype.type(a.negative_slope))


OP = register_unary("leaky_relu", _leaky_relu, attrs=LeakyReluAttrs, flops_per_element=2, check=_check,
                    derivative=_leaky_relu_derivative, doc=__doc__ or "")
