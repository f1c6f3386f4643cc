"""The one mechanism behind every unary elementwise op (activations): same shape, dtype and layout in and out.

An activation module only states its attributes, its numpy formula and its cost per element; this module turns
that into a registered :class:`OpDef`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.registry import NoAttrs, OpDef, Where, register


def require_float(t: TensorType, operand: str, where: Where) -> None:
    if not t.dtype.is_float:
        raise where.fail("operand dtype", f"{operand} must be float32 or float64, got {t.dtype.name.lower()}")


def register_unary(name: str, fn: Callable[[np.ndarray, Any], np.ndarray], *, attrs: type = NoAttrs,
                   flops_per_element: int = 1, check: Callable[[Any, Where], None] | None = None,
                   doc: str = "") -> OpDef:
    """Register ``y = fn(x, attrs)`` applied elementwise; ``check`` validates the attributes."""

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

    return register(OpDef(name=name, inputs=("x",), infer=infer, reference=reference, attrs=attrs, flops=flops,
                          doc=doc or (fn.__doc__ or "")))
