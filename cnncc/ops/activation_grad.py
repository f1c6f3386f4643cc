"""activation_grad: ``dy * f'(x)`` for an elementwise activation ``f``, the one op behind every activation's VJP.

Attributes name the forward op and carry its attributes; the derivative itself is stated in the activation's own
module (``register_unary(..., derivative=...)``) next to its formula, and looked up here through the registry, so
adding an activation adds no case to this module. Operands ``x`` (the forward input) and ``dy`` (the gradient of
the forward output), same type; the result has that type.

Derivatives at the kinks follow PyTorch's autograd (``derivatives.yaml``), stated in each activation's docstring:
``relu'(0) = 0`` (the seeds take 1, seed 000 L523-573), ``relu6`` and ``hardtanh`` have derivative 0 at both clip
points, ``leaky_relu'(0) = negative_slope`` and ``elu'(0) = alpha``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import BACKWARD, NoAttrs, OpDef, Where, all_ops, register


@dataclass(frozen=True)
class ActivationGradAttrs:
    """``op``: the forward activation (a registered op with a ``derivative``); ``attrs``: its attributes."""

    op: str
    attrs: Any = NoAttrs()


def _derivative(op: str) -> Any:
    opdef = all_ops().get(op)
    return None if opdef is None else opdef.derivative


def _infer(types: Sequence[TensorType], a: ActivationGradAttrs, where: Where) -> Sequence[TensorType]:
    x, dy = types
    if _derivative(a.op) is None:
        known = sorted(n for n, d in all_ops().items() if d.derivative is not None)
        raise where.fail("activation", f"op = {a.op!r} is not an elementwise activation with a derivative; "
                                       f"known: {', '.join(known)}")
    all_ops()[a.op].infer_types([x], a.attrs, where.layer)  # the forward attributes' own checks
    require_same_float(types, ("x", "dy"), where)
    if x.shape != dy.shape:
        raise where.fail("dy shape", f"x has shape {x.shape} but dy has shape {dy.shape}; they must match")
    return (dy,)


def _reference(arrays: Sequence[np.ndarray], a: ActivationGradAttrs) -> np.ndarray:
    x, dy = arrays
    return np.asarray(dy * np.asarray(_derivative(a.op)(x, a.attrs), dtype=x.dtype), dtype=x.dtype)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: ActivationGradAttrs) -> int:
    return 2 * outs[0].size


OP = register(OpDef(name="activation_grad", inputs=("x", "dy"), infer=_infer, reference=_reference,
                    attrs=ActivationGradAttrs, flops=_flops, traits=BACKWARD, doc=__doc__ or ""))
