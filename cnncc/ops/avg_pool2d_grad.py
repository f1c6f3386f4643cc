"""avg_pool2d_grad: the gradient of avg_pool2d with respect to its input.

For ``y = avg_pool2d(x)`` each output gradient, divided by its window's divisor, is spread evenly over the window::

    dx_pad[n, c, i*sh + r, j*sw + s] += dy[n, c, i, j] / divisor[i, j]      for every (r, s) of the kernel
    dx = dx_pad[:, :, top : top + H, left : left + W]

with exactly the forward's divisors (:func:`cnncc.ops.avg_pool2d.divisors`: ``count_include_pad`` and
``ceil_mode`` as PyTorch); the share that lands on padding cells (counted or not) is dropped.

Operand ``dy`` (N, C, OH, OW). Attributes :class:`AvgPool2dGradAttrs`: the forward's
:class:`~cnncc.ops.avg_pool2d.AvgPool2dAttrs` and ``size``, the forward input's ``(H, W)`` (a strided pool maps
several input sizes to one output size). Result ``dx`` (N, C, H, W). FLOPs: one division per window and ``kh*kw``
adds. No VJP (second derivatives are out of scope).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnncc.ir.types import TensorType, image_type
from cnncc.ops.avg_pool2d import OP as AVG_POOL2D
from cnncc.ops.avg_pool2d import AvgPool2dAttrs, divisors
from cnncc.ops.registry import BACKWARD, OpDef, Where, register
from cnncc.ops.window import check_pair, require_image


@dataclass(frozen=True)
class AvgPool2dGradAttrs:
    """``pool``: the forward's attributes; ``size``: the forward input's spatial size ``(H, W)``."""

    pool: AvgPool2dAttrs
    size: tuple[int, int]


def _infer(types: Sequence[TensorType], a: AvgPool2dGradAttrs, where: Where) -> Sequence[TensorType]:
    (dy,) = types
    require_image(dy, "dy", where)
    if not isinstance(a.pool, AvgPool2dAttrs):
        raise where.fail("malformed pool", f"pool must be AvgPool2dAttrs, got {type(a.pool).__name__}")
    h, w = check_pair("size", a.size, 1, where)
    x = image_type((dy.shape[0], dy.shape[1], h, w), dy.dtype)
    (y,) = AVG_POOL2D.infer([x], a.pool, where)  # the forward's checks and output size
    if dy.shape != y.shape:
        p = a.pool
        raise where.fail("dy shape", f"dy has shape {dy.shape} but avg_pool2d of an input {x.shape} with kernel "
                                     f"{p.kernel}, stride {p.stride}, padding {p.padding}, ceil_mode={p.ceil_mode} "
                                     f"gives {y.shape}")
    return (x,)


def _reference(arrays: Sequence[np.ndarray], a: AvgPool2dGradAttrs) -> np.ndarray:
    dy = arrays[0]
    p = a.pool
    n, c, oh, ow = dy.shape
    h, w = a.size
    (kh, kw), (sh, sw) = p.kernel, p.stride
    t, b, l, r = p.padding
    share = dy / divisors((h, w), p, dy.dtype)
    ph = max(h + t + b, (oh - 1) * sh + kh)  # a ceil-mode window may reach past the bottom/right padding
    pw = max(w + l + r, (ow - 1) * sw + kw)
    dx = np.zeros((n, c, ph, pw), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i: i + (oh - 1) * sh + 1: sh, j: j + (ow - 1) * sw + 1: sw] += share
    return np.ascontiguousarray(dx[:, :, t: t + h, l: l + w])


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: AvgPool2dGradAttrs) -> int:
    return ins[0].size * (1 + a.pool.kernel[0] * a.pool.kernel[1])


OP = register(OpDef(name="avg_pool2d_grad", inputs=("dy",), infer=_infer, reference=_reference,
                    attrs=AvgPool2dGradAttrs, flops=_flops, traits=BACKWARD, doc=__doc__ or ""))
