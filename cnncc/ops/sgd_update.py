"""sgd_update: one step of stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight decay.

Operands ``(param, grad, lr[, velocity])``; results ``(new_param[, new_velocity])``. With ``g = grad + weight_decay
* param``::

    momentum == 0:  p = p - lr * g                                     (seed 000 L745-763, seed 004 L331-337)
    momentum  > 0:  v = momentum * v + g;  d = g + momentum * v if nesterov else v;  p = p - lr * d

This is ``torch.optim.SGD`` with ``dampening=0`` (velocity starts at 0). The seeds write momentum as ``v = mu*v -
learning_rate*dx; x += v`` (seed 004 L364-385): their velocity is ``-lr`` times this one, so for a constant learning
rate both give identical iterates (they differ only when the learning rate changes between steps: the seeds' form
keeps the old rate inside ``v``). The seeds' Nesterov form (look-ahead ``x_ahead = x + mu*v``, L387-417) is the same
method as PyTorch's after the change of variables to the look-ahead point. The ``velocity`` operand is present if and
only if ``momentum > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ops.optimizer import check_finite_at_least, decayed, register_update
from cnncc.ops.registry import Where


@dataclass(frozen=True)
class SgdAttrs:
    """``momentum`` >= 0 (0: plain SGD, no velocity operand); ``nesterov`` (needs momentum > 0);
    ``weight_decay`` >= 0 (L2, added to the gradient)."""

    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


def _check(a: SgdAttrs, where: Where) -> None:
    check_finite_at_least(a.momentum, "momentum", 0.0, where)
    check_finite_at_least(a.weight_decay, "weight_decay", 0.0, where)
    if not isinstance(a.nesterov, bool):
        raise where.fail("nesterov", f"nesterov must be a bool, got {a.nesterov!r}")
    if a.nesterov and a.momentum == 0:
        raise where.fail("nesterov", f"nesterov momentum needs momentum > 0, got momentum {a.momentum!r}")


def _state(a: SgdAttrs) -> tuple[str, ...]:
    return ("velocity",) if a.momentum > 0 else ()


def _update(p: np.ndarray, grad: np.ndarray, lr: np.ndarray, step: np.ndarray, state: list[np.ndarray],
            a: SgdAttrs) -> list[np.ndarray]:
    g = decayed(p, grad, a.weight_decay)
    if not a.momentum:
        return [p - lr * g]
    mu = p.dtype.type(a.momentum)
    v = mu * state[0] + g
    d = g + mu * v if a.nesterov else v
    return [p - lr * d, v]


def _flops(a: Any) -> int:
    return 2 + (2 if a.weight_decay else 0) + (2 if a.momentum else 0) + (2 if a.nesterov else 0)


OP = register_update("sgd_update", attrs=SgdAttrs, scalars=("lr",), state=_state, all_state=("velocity",),
                     check=_check, update=_update, flops_per_element=_flops, doc=__doc__ or "", optional=1)
