"""conv2d_grad_weight: the gradient of conv2d with respect to its weight.

For ``y = conv2d(x, w)`` (attributes as :class:`cnncc.ops.conv2d.Conv2dAttrs`; ``g = k // (K / groups)`` the group
of output channel ``k``, ``Cg = C / groups``)::

    dw[k, c, r, s] = sum_{n, i, j} dy[n, k, i, j] * x_pad[n, g*Cg + c, i*sh + r*dh, j*sw + s*dw]

the correlation of the zero-padded input with the output gradient, per group. This is
``torch.nn.grad.conv2d_weight``. The bias gradient is not part of this op: it is ``sum_to(dy, (1, K, 1, 1))``
reshaped to ``(K,)``.

Operands: ``x`` (N, C, H, W) and ``dy`` (N, K, OH, OW). Attributes
:class:`~cnncc.ops.conv2d_grad_input.Conv2dGradAttrs` with ``size`` the kernel's ``(R, S)``. Result ``dw``
(K, C/groups, R, S). MACs: the forward conv's, ``N*K*OH*OW*(C/groups)*R*S``. No VJP (second derivatives are out of
scope).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.conv2d_grad_input import Conv2dGradAttrs, check_dy_spatial, check_grad_attrs
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import BACKWARD, OpDef, Where, register
from cnncc.ops.window import pad_to_windows, require_image, windows


def _infer(types: Sequence[TensorType], a: Conv2dGradAttrs, where: Where) -> Sequence[TensorType]:
    x, dy = types
    require_image(x, "x", where)
    require_image(dy, "dy", where)
    require_same_float(types, ("x", "dy"), where)
    _, _, _, groups, size = check_grad_attrs(a, where)
    c, k = x.shape[1], dy.shape[1]
    if dy.shape[0] != x.shape[0]:
        raise where.fail("batch size", f"x has batch {x.shape[0]} but dy has batch {dy.shape[0]}")
    if k % groups:
        raise where.fail("output channels not divisible by groups",
                         f"dy has {k} channels, which groups={groups} does not divide")
    if c % groups:
        raise where.fail("input channels not divisible by groups",
                         f"x {x.shape} has {c} channels, which groups={groups} does not divide")
    check_dy_spatial(dy, x.shape[2:], size, a, where)
    return (TensorType((k, c // groups, size[0], size[1]), x.dtype),)


def _reference(arrays: Sequence[np.ndarray], a: Conv2dGradAttrs) -> np.ndarray:
    """Per image and group, ``dy (Kg, OH*OW) @ patchesᵀ (OH*OW, Cg*R*S)``, summed over the batch."""
    x = arrays[0]
    dy = np.asarray(arrays[1], dtype=x.dtype)
    n, c, _, _ = x.shape
    _, k, oh, ow = dy.shape
    r, s = a.size
    g = a.groups
    kg, cg = k // g, c // g
    xp = pad_to_windows(x, a.padding, (r, s), a.stride, a.dilation, (oh, ow), 0.0)
    win = windows(xp, (r, s), a.stride, a.dilation, (oh, ow))  # (N, C, OH, OW, R, S)
    dw = np.zeros((g, kg, cg * r * s), dtype=x.dtype)
    for i in range(n):
        cols = win[i].reshape(g, cg, oh, ow, r, s).transpose(0, 2, 3, 1, 4, 5).reshape(g, oh * ow, cg * r * s)
        dw += np.matmul(dy[i].reshape(g, kg, oh * ow), cols)
    return dw.reshape(k, cg, r, s)


def _macs(ins: Sequence[TensorType], outs: Sequence[TensorType], a: Conv2dGradAttrs) -> int:
    _, cg, r, s = outs[0].shape
    return ins[1].size * cg * r * s


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: Conv2dGradAttrs) -> int:
    return 2 * _macs(ins, outs, a)


OP = register(OpDef(name="conv2d_grad_weight", inputs=("x", "dy"), infer=_infer, reference=_reference,
                    attrs=Conv2dGradAttrs, macs=_macs, flops=_flops, traits=BACKWARD, doc=__doc__ or ""))
