"""Epilogues: what a fused convolution or linear layer does to its accumulators before the store.

An epilogue is a tuple of steps applied in order to ``conv(x, w) + bias``: ``add`` reads the next extra operand
(a residual connection), any other step is a unary activation op applied through its own registered reference.
This module is the one mechanism shared by ``fused_conv2d`` and ``fused_linear``, their VJP included
(:func:`epilogue_vjp`): the fused op's gradient is the gradients of its components, chained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.errors import CnnccError
from cnncc.ir.types import TensorType
from cnncc.ops.registry import EpilogueRole, NoAttrs, Where, get_op, ops_where, traits


def epilogue_activations() -> tuple[str, ...]:
    """The ops an epilogue may apply as a step (``OpTraits.epilogue`` is ``ACTIVATION``), in registration order."""
    return ops_where(lambda t: t.epilogue is EpilogueRole.ACTIVATION)


def _is_activation(op: str) -> bool:
    try:
        return traits(op).epilogue is EpilogueRole.ACTIVATION
    except CnnccError:  # not an op at all
        return False


@dataclass(frozen=True)
class EpilogueStep:
    """``add`` (the next extra operand) or an activation op name with that op's attributes."""

    op: str
    attrs: Any = NoAttrs()

    def __str__(self) -> str:
        fields = dataclasses.fields(self.attrs) if dataclasses.is_dataclass(self.attrs) else ()
        args = ", ".join(f"{f.name}={getattr(self.attrs, f.name)!r}" for f in fields)
        return f"{self.op}({args})" if args else self.op


def residual_count(steps: Sequence[EpilogueStep]) -> int:
    return sum(1 for s in steps if s.op == "add")


def check_epilogue(steps: Sequence[EpilogueStep], out: TensorType, extras: Sequence[TensorType],
                   where: Where) -> None:
    """Every step is ``add`` or a known activation; every residual has exactly the output's shape and dtype."""
    if residual_count(steps) != len(extras):
        raise where.fail("epilogue operands", f"{residual_count(steps)} add steps but {len(extras)} extra operands")
    for s in steps:
        if s.op != "add" and not _is_activation(s.op):
            acts = ", ".join(epilogue_activations())
            raise where.fail("epilogue step", f"'{s.op}' is not add or an activation ({acts})")
        if s.op != "add":
            get_op(s.op).infer_types([out], s.attrs, where.layer)
    for t in extras:
        if t.shape != out.shape or t.dtype != out.dtype:
            raise where.fail("residual shape", f"residual {t} must match the output {out}")


def apply_epilogue(y: np.ndarray, steps: Sequence[EpilogueStep], extras: Sequence[np.ndarray]) -> np.ndarray:
    """The reference: each step through the registry's numpy references, in the dtype of ``y``."""
    k = 0
    for s in steps:
        if s.op == "add":
            y = y + np.asarray(extras[k], dtype=y.dtype)
            k += 1
        else:
            y = get_op(s.op).run_reference([y], s.attrs)[0]
    return y


def epilogue_flops(steps: Sequence[EpilogueStep], out: TensorType) -> int:
    return sum(1 if s.op == "add" else get_op(s.op).flops([out], [out], s.attrs) // max(out.size, 1)
               for s in steps) * out.size


def epilogue_vjp(ctx: Any, z: Any, steps: Sequence[EpilogueStep], residuals: Sequence[Any], dy: Any,
                 ) -> tuple[Any, list[Any]]:
    """Back through the epilogue: ``z`` is ``conv(x, w) + bias`` recomputed in the new graph, ``residuals`` the
    forward's extra operands (forward values), ``dy`` the fused output's gradient. Recomputes each step's input
    (an activation's derivative reads it) and returns ``(dz, [d residual ...])``: ``add`` passes the gradient
    through to both sides, an activation multiplies it by its derivative (``activation_grad``)."""
    from cnncc.ops.activation_grad import ActivationGradAttrs

    step_inputs, k = [], 0
    for s in steps:
        step_inputs.append(z)
        if s.op == "add":
            z = ctx.emit("add", [z, ctx.value(residuals[k])])
            k += 1
        else:
            z = ctx.emit(s.op, [z], s.attrs)
    g, d_res = dy, [None] * len(residuals)
    for s, zin in zip(reversed(steps), reversed(step_inputs), strict=True):
        if s.op == "add":
            k -= 1
            d_res[k] = g if ctx.needs_grad(residuals[k]) else None
        else:
            g = ctx.emit("activation_grad", [zin, g], ActivationGradAttrs(s.op, s.attrs))
    return g, d_res
