"""linear (fully connected, Dense): ``y = x Wᵀ + b`` with ``W`` of shape ``(out_features, in_features)``.

This is PyTorch's ``nn.Linear`` convention and the seeds' ``y_j = Σ_i W_ji x_i`` with ``W ∈ R^{n_out×n_in}``
(seed 003 L146-156; seed 002 L12-22; seed 004 L86-90). Keras ``Dense`` stores its kernel as ``(in, out)``: the
frontend transposes it. Operands: ``x`` ``(N, in)``, ``weight`` ``(out, in)``, optional ``bias`` ``(out,)``.

VJP: ``dx = dy W``, ``dW = dyᵀ x`` as the gradients of a 1x1 convolution (``conv2d_grad_input`` and
``conv2d_grad_weight`` on (N, features, 1, 1) views), ``db = Σ_batch dy = sum_to(dy, (out,))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_rank, require_same_float
from cnncc.ops.registry import Category, NoAttrs, OpDef, OpTraits, Where, register


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


def linear_grads(ctx: Any, inputs: Sequence[Any], dy: Any) -> list[Any]:
    """Gradients of ``linear(*inputs)`` (forward values x, weight[, bias]) for the output gradient ``dy`` (a value
    of the new graph); ``None`` for an input that needs none. Shared with ``fused_linear``'s VJP.

    A linear layer is a 1x1 convolution of (N, in, 1, 1) images, so its gradients are the convolution's:
    ``dx = conv2d_grad_input(dy, W)`` and ``dW = conv2d_grad_weight(x, dy)`` on reshaped views -- one backward
    mechanism whose CPU kernels take weights known only at run time (no transposes of the batch axis)."""
    from cnncc.ops.conv2d_grad_input import Conv2dGradAttrs
    from cnncc.ops.reshape import ReshapeAttrs

    x, w = inputs[0], inputs[1]
    n, f = x.shape
    k = w.shape[0]
    dy4 = ctx.emit("reshape", [dy], ReshapeAttrs((n, k, 1, 1)))
    dx = dw = None
    if ctx.needs_grad(x):
        w4 = ctx.emit("reshape", [ctx.value(w)], ReshapeAttrs((k, f, 1, 1)))
        dx4 = ctx.emit("conv2d_grad_input", [dy4, w4], Conv2dGradAttrs(size=(1, 1)))
        dx = ctx.emit("reshape", [dx4], ReshapeAttrs((n, f)))
    if ctx.needs_grad(w):
        x4 = ctx.emit("reshape", [ctx.value(x)], ReshapeAttrs((n, f, 1, 1)))
        dw4 = ctx.emit("conv2d_grad_weight", [x4, dy4], Conv2dGradAttrs(size=(1, 1)))
        dw = ctx.emit("reshape", [dw4], ReshapeAttrs((k, f)))
    grads = [dx, dw]
    if len(inputs) == 3:
        bias = inputs[2]
        grads.append(ctx.sum_to(dy, bias.shape) if ctx.needs_grad(bias) else None)
    return grads


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    return linear_grads(ctx, node.inputs, grads_out[0])


OP = register(OpDef(name="linear", inputs=("x", "weight", "bias"), optional=1, infer=_infer,
                    reference=_reference, macs=_macs, flops=_flops, vjp=_vjp,
                    traits=OpTraits(category=Category.LINEAR, fused_form="fused_linear"), doc=__doc__ or ""))
