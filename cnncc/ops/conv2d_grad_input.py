"""conv2d_grad_input: the gradient of conv2d with respect to its input x (the "transposed convolution" of dy).

For ``y = conv2d(x, w)`` with attributes stride ``(sh, sw)``, padding ``(top, bottom, left, right)``, dilation
``(dh, dw)`` and ``groups`` (exactly :class:`cnncc.ops.conv2d.Conv2dAttrs`' meaning)::

    dx_pad[n, g*Cg + c, i*sh + r*dh, j*sw + s*dw] += dy[n, k, i, j] * w[k, c, r, s]    for every k of group g
    dx = dx_pad[:, :, top : top + H, left : left + W]

i.e. every output gradient is scattered back, weighted by the kernel, onto the input cells its window read; the
cells in the padding are dropped, and input rows/columns that no window reached (the floor in the output size)
get 0. This is ``torch.nn.grad.conv2d_input``.

Operands: ``dy`` (N, K, OH, OW) and ``weight`` (K, C/groups, R, S). Attributes :class:`Conv2dGradAttrs`, whose
``size`` is the forward input's ``(H, W)`` (a strided forward maps several input sizes to one output size, so dy
alone does not determine it). Result ``dx`` (N, C, H, W) with ``C = weight.shape[1] * groups``. MACs: the forward
conv's, ``N*K*OH*OW*(C/groups)*R*S``.

:class:`Conv2dGradAttrs` is shared with :mod:`cnncc.ops.conv2d_grad_weight`, where ``size`` is the kernel's
``(R, S)``. Backward ops have no VJP of their own (second derivatives are out of scope).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cnncc.convalgo import ALGORITHMS, ConvImpl
from cnncc.ir.types import TensorType, image_type
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import BACKWARD, OpDef, Where, register
from cnncc.ops.window import check_padding, check_pair, require_image, spatial_output


@dataclass(frozen=True)
class Conv2dGradAttrs:
    """Attributes of ``conv2d_grad_input`` and ``conv2d_grad_weight``: the forward conv's ``stride``, ``padding``
    ``(top, bottom, left, right)``, ``dilation`` and ``groups``, and ``size``: the forward input's ``(H, W)``
    (grad_input) or the kernel's ``(R, S)`` (grad_weight). ``impl``: grad_input's algorithm, set by the selection
    pass like conv2d's (grad_weight has none)."""

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    size: tuple[int, int] = (1, 1)
    impl: ConvImpl | None = field(default=None, metadata={"optional": True})


def check_grad_attrs(a: Conv2dGradAttrs, where: Where) -> tuple[tuple[int, int], tuple[int, int, int, int],
                                                                  tuple[int, int], int, tuple[int, int]]:
    """Validated ``(stride, padding, dilation, groups, size)``."""
    stride = check_pair("stride", a.stride, 1, where)
    dilation = check_pair("dilation", a.dilation, 1, where)
    padding = check_padding(a.padding, where)
    size = check_pair("size", a.size, 1, where)
    if not isinstance(a.groups, int) or isinstance(a.groups, bool) or a.groups < 1:
        raise where.fail("invalid groups", f"groups must be an int >= 1, got {a.groups!r}")
    return stride, padding, dilation, a.groups, size


def check_dy_spatial(dy: TensorType, x_hw: tuple[int, ...], kernel: tuple[int, ...], a: Conv2dGradAttrs,
                     where: Where) -> None:
    """dy's (OH, OW) must be the forward conv's output size for input ``x_hw`` and kernel ``kernel``."""
    oh, ow = spatial_output(x_hw, kernel, a.stride, a.padding, a.dilation, False, where)
    if dy.shape[2:] != (oh, ow):
        raise where.fail("dy spatial size",
                         f"dy has spatial size {dy.shape[2]}x{dy.shape[3]} but a conv of input {x_hw[0]}x{x_hw[1]} "
                         f"with kernel {kernel[0]}x{kernel[1]}, stride {a.stride}, padding {a.padding}, dilation "
                         f"{a.dilation} gives {oh}x{ow}")


def _infer(types: Sequence[TensorType], a: Conv2dGradAttrs, where: Where) -> Sequence[TensorType]:
    dy, w = types
    require_image(dy, "dy", where)
    if w.rank != 4:
        raise where.fail("weight rank", f"weight must be rank 4 (K, C/groups, R, S), got shape {w.shape}")
    require_same_float(types, ("dy", "weight"), where)
    _, _, _, groups, size = check_grad_attrs(a, where)
    if a.impl is not None and a.impl.algorithm not in ALGORITHMS:
        raise where.fail("unknown algorithm", f"algorithm '{a.impl.algorithm}' is not one of {', '.join(ALGORITHMS)}")
    k, cg = w.shape[:2]
    if min(w.shape) < 1:
        raise where.fail("empty weight", f"every dimension of weight {w.shape} must be at least 1")
    if dy.shape[1] != k:
        raise where.fail("mismatched channels", f"dy has {dy.shape[1]} channels but weight {w.shape} has {k} output "
                                                "channels")
    if k % groups:
        raise where.fail("output channels not divisible by groups",
                         f"weight {w.shape} has {k} output channels, which groups={groups} does not divide")
    check_dy_spatial(dy, size, w.shape[2:], a, where)
    return (image_type((dy.shape[0], cg * groups, size[0], size[1]), dy.dtype),)


def _reference(arrays: Sequence[np.ndarray], a: Conv2dGradAttrs) -> np.ndarray:
    """One matmul per kernel tap (r, s): ``wᵀ[:, :, r, s] @ dy`` scattered onto the strided, dilated input cells."""
    dy = arrays[0]
    w = np.asarray(arrays[1], dtype=dy.dtype)
    n, k, oh, ow = dy.shape
    _, cg, r, s = w.shape
    g, kg = a.groups, k // a.groups
    (sh, sw), (dh, dw) = a.stride, a.dilation
    h, wd = a.size
    t, b, l, rp = a.padding
    dx = np.zeros((n, g, cg, h + t + b, wd + l + rp), dtype=dy.dtype)
    dyg = dy.reshape(n, g, kg, oh * ow)
    wt = w.reshape(g, kg, cg, r, s).transpose(3, 4, 0, 2, 1)  # (R, S, G, Cg, Kg)
    for i in range(r):
        for j in range(s):
            contrib = np.matmul(wt[i, j], dyg).reshape(n, g, cg, oh, ow)  # (G, Cg, Kg) @ (N, G, Kg, OH*OW)
            dx[:, :, :, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw] += contrib
    return np.ascontiguousarray(dx[:, :, :, t: t + h, l: l + wd].reshape(n, g * cg, h, wd))


def _macs(ins: Sequence[TensorType], outs: Sequence[TensorType], a: Conv2dGradAttrs) -> int:
    _, cg, r, s = ins[1].shape
    return ins[0].size * cg * r * s


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: Conv2dGradAttrs) -> int:
    return 2 * _macs(ins, outs, a)


OP = register(OpDef(name="conv2d_grad_input", inputs=("dy", "weight"), infer=_infer, reference=_reference,
                    attrs=Conv2dGradAttrs, macs=_macs, flops=_flops, traits=BACKWARD, doc=__doc__ or ""))
