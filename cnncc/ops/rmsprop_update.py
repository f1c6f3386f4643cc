"""rmsprop_update: one RMSprop step (seed 004 L477-486), ``torch.optim.RMSprop`` (not centered, no momentum).

Operands ``(param, grad, lr, square_avg)``; results ``(new_param, new_square_avg)``. With ``g = grad +
weight_decay * param``::

    v = alpha * v + (1 - alpha) * g * g;   p = p - lr * g / (sqrt(v) + eps)

``alpha`` is the seeds' ``decay_rate`` (they suggest 0.9, 0.99 or 0.999; PyTorch's default 0.99 is the default
here); ``eps`` is outside the square root; ``square_avg`` starts at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ops.optimizer import check_finite_at_least, check_unit, decayed, register_update
from cnncc.ops.registry import Where


@dataclass(frozen=True)
class RmspropAttrs:
    """``alpha`` in [0, 1] (decay of the squared-gradient average); ``eps`` > 0 (outside the sqrt);
    ``weight_decay`` >= 0 (L2, added to the gradient)."""

    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0


def _check(a: RmspropAttrs, where: Where) -> None:
    check_unit(a.alpha, "alpha", where, closed=True)
    check_finite_at_least(a.eps, "eps", 0.0, where, strict=True)
    check_finite_at_least(a.weight_decay, "weight_decay", 0.0, where)


def _update(p: np.ndarray, grad: np.ndarray, lr: np.ndarray, step: np.ndarray, state: list[np.ndarray],
            a: RmspropAttrs) -> list[np.ndarray]:
    t = p.dtype.type
    g = decayed(p, grad, a.weight_decay)
    v = t(a.alpha) * state[0] + t(1.0 - a.alpha) * (g * g)
    return [p - lr * g / (np.sqrt(v) + t(a.eps)), v]


def _flops(a: Any) -> int:
    return 9 + (2 if a.weight_decay else 0)  # alpha*v, g*g, *(1-alpha), +, sqrt, +eps, /, *lr, -


OP = register_update("rmsprop_update", attrs=RmspropAttrs, scalars=("lr",), state=lambda a: ("square_avg",),
                     all_state=("square_avg",), check=_check, update=_update, flops_per_element=_flops,
                     doc=__doc__ or "")
