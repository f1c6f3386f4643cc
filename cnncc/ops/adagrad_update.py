"""adagrad_update: one AdaGrad step (seed 004 L451-475), ``torch.optim.Adagrad`` with ``lr_decay=0``.

Operands ``(param, grad, lr, sum)``; results ``(new_param, new_sum)``. With ``g = grad + weight_decay * param``::

    sum = sum + g * g;   p = p - lr * g / (sqrt(sum) + eps)

``eps`` is added outside the square root, as in the seeds' code (``cache += dx**2; x += - learning_rate * dx /
(np.sqrt(cache) + eps)``). The seeds' first formula ``θ_j ← θ_j − (λ/G_jj) g_j`` misses the square root; their next
line, their code and PyTorch have it ("the square root operation turns out to be very important"). ``sum`` starts at
0 (PyTorch's ``initial_accumulator_value=0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ops.optimizer import check_finite_at_least, decayed, register_update
from cnncc.ops.registry import Where


@dataclass(frozen=True)
class AdagradAttrs:
    """``eps`` > 0 (outside the sqrt); ``weight_decay`` >= 0 (L2, added to the gradient)."""

    eps: float = 1e-10
    weight_decay: float = 0.0


def _check(a: AdagradAttrs, where: Where) -> None:
    check_finite_at_least(a.eps, "eps", 0.0, where, strict=True)
    check_finite_at_least(a.weight_decay, "weight_decay", 0.0, where)


def _update(p: np.ndarray, grad: np.ndarray, lr: np.ndarray, step: np.ndarray, state: list[np.ndarray],
            a: AdagradAttrs) -> list[np.ndarray]:
    g = decayed(p, grad, a.weight_decay)
    s = state[0] + g * g
    return [p - lr * g / (np.sqrt(s) + p.dtype.type(a.eps)), s]


def _flops(a: Any) -> int:
    return 7 + (2 if a.weight_decay else 0)  # g*g, +, sqrt, +eps, /, *lr, -


OP = register_update("adagrad_update", attrs=AdagradAttrs, scalars=("lr",), state=lambda a: ("sum",),
                     all_state=("sum",), check=_check, update=_update, flops_per_element=_flops, doc=__doc__ or "")
