"""The one mechanism behind the optimiser update ops (sgd_update, adagrad_update, rmsprop_update, adam_update).

An update op takes ``param``, its gradient ``grad``, the learning rate ``lr`` (a run-time scalar operand, shape
``()`` or ``(1,)``, because a schedule changes it every step), for Adam the step counter ``step`` (same convention,
holding ``t`` with ``t = 1`` for the first step) and the optimiser's state tensors (each of ``param``'s shape); it
returns the new parameter and the new state tensors, in operand order. Every operand has the parameter's float dtype;
the reference computes in that dtype. Weight decay is PyTorch's L2 form: ``g = grad + weight_decay * param``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import OpDef, OpTraits, Role, UpdateOperands, Where, register

SCALAR_SHAPES = ((), (1,))

StateFn = Callable[[Any], tuple[str, ...]]
UpdateFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], Any], list[np.ndarray]]


def check_finite_at_least(value: float, name: str, low: float, where: Where, strict: bool = False) -> None:
    """``value`` must be a finite number >= ``low`` (> ``low`` when ``strict``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        raise where.fail(name, f"{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")


def check_unit(value: float, name: str, where: Where, closed: bool) -> None:
    """``value`` in [0, 1] (``closed``) or [0, 1)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise where.fail(name, f"{name} must be in {'[0, 1]' if closed else '[0, 1)'}, got {value!r}")


def register_update(name: str, *, attrs: type, scalars: tuple[str, ...], state: StateFn, all_state: tuple[str, ...],
                    check: Callable[[Any, Where], None], update: UpdateFn, flops_per_element: Callable[[Any], int],
                    doc: str, optional: int = 0) -> OpDef:
    """Register the update op ``name``: operands ``(param, grad, *scalars, *all_state)``, where ``state(attrs)``
    names the state operands the attributes need (a prefix of ``all_state``; the last ``optional`` of them may be
    left out)."""
    operands = ("param", "grad", *scalars, *all_state)
    fixed = 2 + len(scalars)

    def infer(types: Sequence[TensorType], a: Any, where: Where) -> Sequence[TensorType]:
        check(a, where)
        want = state(a)
        got = len(types) - fixed
        if got != len(want):
            need = ", ".join(want) if want else "no state operand"
            raise where.fail("state operands", f"{name} with these attributes takes {need}; got {got} state "
                                               f"operand(s) ({len(types)} operands in all)")
        names = operands[:len(types)]
        require_same_float(types, names, where)
        p = types[0]
        for t, n in zip(types[1:], names[1:], strict=True):
            if n in scalars:
                if t.shape not in SCALAR_SHAPES:
                    raise where.fail("scalar operand", f"{n} must be a scalar (shape () or (1,)), got shape {t.shape}")
            elif t.shape != p.shape:
                raise where.fail("operand shape", f"{n} has shape {t.shape} but param has shape {p.shape}; they "
                                                  "must match")
        return (p, *types[fixed:])

    def reference(arrays: Sequence[np.ndarray], a: Any) -> tuple[np.ndarray, ...]:
        p, g = arrays[0], arrays[1]
        dt = p.dtype
        lr = np.asarray(arrays[2], dt).reshape(())
        step = np.asarray(arrays[3], dt).reshape(()) if len(scalars) > 1 else np.asarray(0, dt)
        outs = update(p, g, lr, step, list(arrays[fixed:]), a)
        return tuple(np.asarray(o, dtype=dt) for o in outs)

    def flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: Any) -> int:
        return flops_per_element(a) * ins[0].size

    return register(OpDef(name=name, inputs=operands, infer=infer, reference=reference, attrs=attrs,
                          optional=optional,
                          flops=flops, traits=OpTraits(role=Role.UPDATE, update=UpdateOperands(scalars, state)),
                          doc=doc))


def decayed(p: np.ndarray, g: np.ndarray, weight_decay: float) -> np.ndarray:
    """``g + weight_decay * p`` (L2 weight decay folded into the gradient), ``g`` itself when it is 0."""
    return g + p.dtype.type(weight_decay) * p if weight_decay else g
