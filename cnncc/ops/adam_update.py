"""adam_update: one Adam step with bias correction (seed 004 L488-511), ``torch.optim.Adam`` (``amsgrad=False``).

Operands ``(param, grad, lr, step, m, v)``; results ``(new_param, new_m, new_v)``. ``step`` is a run-time scalar
holding ``t``, the number of this step counting from 1 (the seeds: "t is your iteration counter going from 1 to
infinity"; ``t = 0`` divides by zero). With ``g = grad + weight_decay * param`` (L2, as PyTorch's Adam, not AdamW)::

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

``eps`` is outside the square root; the defaults are the seeds' (beta1 0.9, beta2 0.999, eps 1e-8). ``m`` and ``v``
start at 0. The seeds' check: the first step with lr 1e-3 and gradient 0.5 moves the parameter by -0.00099999998.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ops.optimizer import check_finite_at_least, check_unit, decayed, register_update
from cnncc.ops.registry import Where


@dataclass(frozen=True)
class AdamAttrs:
    """``beta1``, ``beta2`` in [0, 1); ``eps`` > 0 (outside the sqrt); ``weight_decay`` >= 0 (L2, added to the
    gradient)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


def _check(a: AdamAttrs, where: Where) -> None:
    check_unit(a.beta1, "beta1", where, closed=False)
    check_unit(a.beta2, "beta2", where, closed=False)
    check_finite_at_least(a.eps, "eps", 0.0, where, strict=True)
    check_finite_at_least(a.weight_decay, "weight_decay", 0.0, where)


def _update(p: np.ndarray, grad: np.ndarray, lr: np.ndarray, step: np.ndarray, state: list[np.ndarray],
            a: AdamAttrs) -> list[np.ndarray]:
    t = p.dtype.type
    g = decayed(p, grad, a.weight_decay)
    m = t(a.beta1) * state[0] + t(1.0 - a.beta1) * g
    v = t(a.beta2) * state[1] + t(1.0 - a.beta2) * (g * g)
    bc1 = t(1) - t(a.beta1) ** step
    bc2 = t(1) - t(a.beta2) ** step
    return [p - lr * (m / bc1) / (np.sqrt(v / bc2) + t(a.eps)), m, v]


def _flops(a: Any) -> int:
    return 14 + (2 if a.weight_decay else 0)  # m: 3, v: 4, /bc1, /bc2, sqrt, +eps, /, *lr, -


OP = register_update("adam_update", attrs=AdamAttrs, scalars=("lr", "step"), state=lambda a: ("m", "v"),
                     all_state=("m", "v"), check=_check, update=_update, flops_per_element=_flops, doc=__doc__ or "")
