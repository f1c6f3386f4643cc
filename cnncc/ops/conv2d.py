"""conv2d: 2-D cross-correlation over NCHW images, with stride, explicit padding, dilation, groups and bias.

    y[n, k, i, j] = bias[k] + sum_{c, r, s} x_pad[n, g*Cg + c, i*sh + r*dh, j*sw + s*dw] * w[k, c, r, s]

where ``g = k // (K / groups)`` is the group of output channel ``k`` and ``Cg = C / groups``.

The seeds agree that a CNN "convolution" is cross-correlation, no kernel flip (seed 000 L289-291, seed 002 L43-55),
summed over all input channels of the group, plus one bias per output channel (seed 001 L556-583, L706-869:
"the filter and the underlying map values are multiplied component wise, and the products are added along with the
bias"). Grouped and depthwise convolutions: seed 003 L1054-1063, L1092-1146. Dilation is not in the seeds; it is
supported because PyTorch models use it. The zero padding is explicit ``(top, bottom, left, right)``
(seed 001 L1006-1033 needs asymmetric pads for even kernels); see :mod:`cnncc.ops.window` for the output size.

Shapes: x (N, C, H, W), weight (K, C/groups, R, S), optional bias (K,) -> y (N, K, OH, OW), NCHW.
MACs = N*K*OH*OW*(C/groups)*R*S (seed 001 L2112-2127 counts the parameters ``K_J(K_{J-1} L_J^2 + 1)``).

VJP: ``dx = conv2d_grad_input(dy, w)`` (size = x's (H, W)), ``dw = conv2d_grad_weight(x, dy)`` (size = (R, S)),
both with the forward's stride, padding, dilation and groups, and ``db = reshape(sum_to(dy, (1, K, 1, 1)), (K,))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncc.convalgo import ALGORITHMS, ConvImpl, conv_attrs
from cnncc.ir.types import TensorType, image_type
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register
from cnncc.ops.window import (
    check_padding,
    check_pair,
    output_size,
    pad_to_windows,
    require_image,
    spatial_output,
    windows,
)


@dataclass(frozen=True)
class Conv2dAttrs:
    """Attributes of ``conv2d``: all explicit (the DSL resolves 'same'/'valid' with ``window.resolve_padding``)."""

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # (top, bottom, left, right)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    impl: ConvImpl | None = field(default=None, metadata={"optional": True})


__all__ = ["ALGORITHMS", "OP", "Conv2dAttrs", "ConvImpl", "conv_attrs", "conv_grads"]  # ConvImpl: cnncc.convalgo's


def _check_groups(groups: object, where: Where) -> int:
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise where.fail("malformed groups", f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise where.fail("invalid groups", f"groups {groups} must be at least 1")
    return groups


def _check_channels(x: TensorType, w: TensorType, groups: int, where: Where) -> None:
    c, (k, cg) = x.shape[1], w.shape[:2]
    if min(w.shape) < 1:
        raise where.fail("empty weight", f"every dimension of weight {w.shape} must be at least 1")
    if k % groups:
        raise where.fail("output channels not divisible by groups",
                         f"weight {w.shape} has {k} output channels, which groups={groups} does not divide")
    if c % groups:
        raise where.fail("input channels not divisible by groups",
                         f"input {x.shape} has {c} channels, which groups={groups} does not divide")
    if cg * groups != c:
        raise where.fail("mismatched channels",
                         f"input has {c} channels but weight {w.shape} with groups={groups} expects "
                         f"{cg * groups} (weight in-channels {cg} x groups {groups})")


def _check_operand_dtypes(types: Sequence[TensorType], where: Where) -> None:
    names = ("input", "weight", "bias")
    for name, t in zip(names[1:], types[1:], strict=False):
        if t.dtype != types[0].dtype:
            raise where.fail("mismatched dtypes", f"input is {types[0].dtype.name.lower()} but {name} is "
                                                  f"{t.dtype.name.lower()}")


def _infer(types: Sequence[TensorType], a: Conv2dAttrs, where: Where) -> Sequence[TensorType]:
    x, w = types[0], types[1]
    require_image(x, "input", where)
    if w.rank != 4:
        raise where.fail("weight rank", f"weight must be rank 4 (K, C/groups, R, S), got shape {w.shape}")
    _check_operand_dtypes(types, where)
    stride = check_pair("stride", a.stride, 1, where)
    dilation = check_pair("dilation", a.dilation, 1, where)
    padding = check_padding(a.padding, where)
    groups = _check_groups(a.groups, where)
    _check_channels(x, w, groups, where)
    if a.impl is not None and a.impl.algorithm not in ALGORITHMS:
        raise where.fail("unknown algorithm", f"algorithm '{a.impl.algorithm}' is not one of {', '.join(ALGORITHMS)}")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        raise where.fail("bias shape", f"bias must have shape ({w.shape[0]},) (one per output channel), "
                                       f"got {types[2].shape}")
    oh, ow = spatial_output(x.shape[2:], w.shape[2:], stride, padding, dilation, False, where)
    return (image_type((x.shape[0], w.shape[0], oh, ow), x.dtype),)


def _reference(arrays: Sequence[np.ndarray], a: Conv2dAttrs) -> np.ndarray:
    """Zero-pad, take the (dilated, strided) windows, and per image one batched matmul over the groups."""
    x = arrays[0]
    w = np.asarray(arrays[1], dtype=x.dtype)
    n, _, h, wd = x.shape
    k, cg, r, s = w.shape
    g, kg = a.groups, k // a.groups
    t, b, l, rp = a.padding
    oh = output_size(h, r, a.stride[0], t, b, a.dilation[0])
    ow = output_size(wd, s, a.stride[1], l, rp, a.dilation[1])
    xp = pad_to_windows(x, a.padding, (r, s), a.stride, a.dilation, (oh, ow), 0.0)
    win = windows(xp, (r, s), a.stride, a.dilation, (oh, ow))  # (N, C, OH, OW, R, S)
    wg = w.reshape(g, kg, cg * r * s)
    y = np.empty((n, k, oh, ow), dtype=x.dtype)
    for i in range(n):  # one image at a time bounds the im2col copy
        cols = win[i].reshape(g, cg, oh, ow, r, s).transpose(0, 1, 4, 5, 2, 3).reshape(g, cg * r * s, oh * ow)
        y[i] = np.matmul(wg, cols).reshape(k, oh, ow)  # (G, Kg, Cg*R*S) @ (G, Cg*R*S, OH*OW)
    if len(arrays) == 3:
        y += np.asarray(arrays[2], dtype=x.dtype).reshape(1, k, 1, 1)
    return y


def _macs(ins: Sequence[TensorType], outs: Sequence[TensorType], a: Conv2dAttrs) -> int:
    _, cg, r, s = ins[1].shape
    return outs[0].size * cg * r * s


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: Conv2dAttrs) -> int:
    """2 per MAC, plus one add per output element for the bias."""
    return 2 * _macs(ins, outs, a) + (outs[0].size if len(ins) == 3 else 0)


def conv_grads(ctx: Any, inputs: Sequence[Any], a: Conv2dAttrs, dy: Any) -> list[Any]:
    """Gradients of ``conv2d(*inputs)`` (forward values x, weight[, bias]) for the output gradient ``dy`` (a value
    of the new graph); ``None`` for an input that needs none. Shared with ``fused_conv2d``'s VJP."""
    from cnncc.ops.conv2d_grad_input import Conv2dGradAttrs
    from cnncc.ops.reshape import ReshapeAttrs

    x, w = inputs[0], inputs[1]

    def attrs(size: tuple[int, ...]) -> Conv2dGradAttrs:
        return Conv2dGradAttrs(a.stride, a.padding, a.dilation, a.groups, (int(size[0]), int(size[1])))

    grads = [ctx.emit("conv2d_grad_input", [dy, ctx.value(w)], attrs(x.shape[2:])) if ctx.needs_grad(x) else None,
             ctx.emit("conv2d_grad_weight", [ctx.value(x), dy], attrs(w.shape[2:])) if ctx.needs_grad(w) else None]
    if len(inputs) == 3:
        k = w.shape[0]
        db = None
        if ctx.needs_grad(inputs[2]):
            db = ctx.emit("reshape", [ctx.sum_to(dy, (1, k, 1, 1))], ReshapeAttrs((k,)))
        grads.append(db)
    return grads


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    return conv_grads(ctx, node.inputs, node.attrs, grads_out[0])


OP = register(OpDef(name="conv2d", inputs=("x", "weight", "bias"), optional=1, infer=_infer, reference=_reference,
                    attrs=Conv2dAttrs, macs=_macs, flops=_flops, algorithms=ALGORITHMS, vjp=_vjp,
                    traits=OpTraits(category=Category.CONV, fused_form="fused_conv2d"), doc=__doc__ or ""))
