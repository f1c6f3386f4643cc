"""The one mechanism behind every unary elementwise op (activations): same shape, dtype and layout in and out.

An activation module only states its attributes, its numpy formula, its derivative and its cost per element; this
module turns that into a registered :class:`OpDef` whose VJP is ``activation_grad(x, dy)`` (one backward op for
every activation, see :mod:`cnncc.ops.activation_grad`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.registry import Category, Elementwise, EpilogueRole, NoAttrs, OpDef, OpTraits, Where, register

# Every activation: unary elementwise, a step a conv/linear epilogue can apply, cheap enough to recompute.
ACTIVATION = OpTraits(category=Category.ACTIVATION, elementwise=Elementwise.UNARY, epilogue=EpilogueRole.ACTIVATION,
                      recomputable=True)


def require_float(t: TensorType, operand: str, where: Where) -> None:
    if not t.dtype.is_float:
        raise where.fail("operand dtype", f"{operand} must be float32 or float64, got {t.dtype.name.lower()}")


def register_unary(name: str, fn: Callable[[np.ndarray, Any], np.ndarray], *, attrs: type = NoAttrs,
                   flops_per_element: int = 1, check: Callable[[Any, Where], None] | None = None,
                   derivative: Callable[[np.ndarray, Any], np.ndarray] | None = None, doc: str = "") -> OpDef:
    """Register ``y = fn(x, attrs)`` applied elementwise; ``check`` validates the attributes; ``derivative(x,
    attrs)`` is ``dy/dx`` elementwise (numpy, in ``x``'s dtype), the reference of the op's VJP."""

    def infer(types: Sequence[TensorType], a: Any, where: Where) -> Sequence[TensorType]:
        require_float(types[0], "input", where)
        if check is not None:
            check(a, where)
        return (types[0],)

    def reference(arrays: Sequence[np.ndarray], a: Any) -> np.ndarray:
        x = arrays[0]
        return np.asarray(fn(x, a), dtype=x.dtype)

    def flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: Any) -> int:
        return flops_per_element * outs[0].size

    vjp = None if derivative is None else _activation_vjp(name)
    return register(OpDef(name=name, inputs=("x",), infer=infer, reference=reference, attrs=attrs, flops=flops,
                          vjp=vjp, traits=ACTIVATION, derivative=derivative, doc=doc or (fn.__doc__ or "")))


def _activation_vjp(name: str) -> Callable[[Any, Any, Sequence[Any]], list[Any]]:
    def vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
        from cnncc.ops.activation_grad import ActivationGradAttrs

        (dy,) = grads_out
        return [ctx.emit("activation_grad", [ctx.value(node.inputs[0]), dy], ActivationGradAttrs(name, node.attrs))]

    return vjp
