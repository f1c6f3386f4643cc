"""linear (fully connected, Dense): ``y = x Wᵀ + b`` with ``W`` of shape ``(out_features, in_features)``.

This is PyTorch's ``nn.Linear`` convention and the seeds' ``y_j = Σ_i W_ji x_i`` with ``W ∈ R^{n_out×n_in}``
(seed 003 L146-156; seed 002 L12-22; seed 004 L86-90). Keras ``Dense`` stores its kernel as ``(in, out)``: the
frontend transposes it. Operands: ``x`` ``(N, in)``, ``weight`` ``(out, in)``, optional ``bias`` ``(out,)``.

VJP, as linear and transpose ops: ``dx = dy W = linear(dy, Wᵀ)``, ``dW = dyᵀ x = linear(dyᵀ, xᵀ)``,
``db = Σ_batch dy = sum_to(dy, (out,))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_rank, require_same_float
from cnncc.ops.registry import NoAttrs, OpDef, Where, register
from cnncc.ops.transpose import TransposeAttrs

_T = TransposeAttrs((1, 0))


def _infer(types: Sequence[TensorType], attrs: NoAttrs, where: Where) -> Sequence[TensorType]:
    names = ("x", "weight", "bias")[: len(types)]
    require_same_float(types, names, where)
    x, w = types[0], types[1]
    require_rank(x, "x", (2,), "(N, in_features)", where)
    require_rank(w, "weight", (2,), "(out_features, in_features)", where)
    if x.shape[1] != w.shape[1]:
        raise where.fail("in_features", f"x has shape {x.shape} but weight has shape {w.shape}: x.shape[1] = "
                                        f"{x.shape[1]} must equal weight.shape[1] = {w.shape[1]} "
                                        "(weight is (out_features, in_features))")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        raise where.fail("bias shape", f"bias must have shape ({w.shape[0]},) for weight of shape {w.shape}, "
                                       f"got {types[2].shape}")
    return (TensorType((x.shape[0], w.shape[0]), x.dtype),)


def _reference(arrays: Sequence[np.ndarray], attrs: NoAttrs) -> np.ndarray:
    x, w = arrays[0], arrays[1]
    y = np.matmul(x, w.T)
    if len(arrays) == 3:
        y = y + arrays[2]
    return np.asarray(y, dtype=x.dtype)


def _macs(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: NoAttrs) -> int:
    n, k = ins[0].shape
    return n * k * ins[1].shape[0]


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: NoAttrs) -> int:
    bias = outs[0].size if len(ins) == 3 else 0
    return 2 * _macs(ins, outs, attrs) + bias


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    x, w = node.inputs[0], node.inputs[1]
    dx = ctx.emit("linear", [dy, ctx.emit("transpose", [ctx.value(w)], _T)]) if ctx.needs_grad(x) else None
    dw = None
    if ctx.needs_grad(w):
        dw = ctx.emit("linear", [ctx.emit("transpose", [dy], _T), ctx.emit("transpose", [ctx.value(x)], _T)])
    grads = [dx, dw]
    if len(node.inputs) == 3:
        bias = node.inputs[2]
        grads.append(ctx.sum_to(dy, bias.shape) if ctx.needs_grad(bias) else None)
    return grads


OP = register(OpDef(name="linear", inputs=("x", "weight", "bias"), optional=1, infer=_infer,
                    reference=_reference, macs=_macs, flops=_flops, vjp=_vjp, doc=__doc__ or ""))
