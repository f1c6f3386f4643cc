"""relu: ``max(0, x)`` (seed 000 L523-573). Its derivative at 0 is taken as 0, as in PyTorch (the seeds use 1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnncc.ops.elementwise import register_unary


def _relu(x: np.ndarray, attrs: Any) -> np.ndarray:
    return np.maximum(x, 0)


OP = register_unary("relu", _relu, doc=__doc__ or "")
