"""avg_pool2d: the mean of each (strided) kernel window of an NCHW image, per channel ("mean pooling").

Seed 001 L1281-1289: "Alternative to Max pooling: Mean Pooling", 2x2 stride 2 on
``[[1,1,2,4],[5,6,7,8],[3,2,1,0],[1,2,3,4]]`` -> ``[[3.25, 5.25], [2, 2]]`` (TV-34 of the seeds digest); the seeds
say nothing about padding, so the divisor follows PyTorch exactly:

* ``count_include_pad=True`` (PyTorch's default): the window's size clipped to the padded extent -- for a window
  starting at row ``h0`` (in input coordinates, ``h0 >= -top``), ``h1 = min(h0 + kh, H + bottom)``, likewise for
  columns, divisor ``(h1 - h0) * (w1 - w0)``. Zero padding cells count; the cells a ``ceil_mode`` window reaches past
  the bottom/right padding do not.
* ``count_include_pad=False``: the number of input cells in the window (Keras 'same' average pooling).

The reference computes the divisor exactly that way: it sums the same windows over a 0/1 mask of the counted cells.
Each pad is at most half the kernel, so every divisor is at least 1.

FLOPs: ``kh*kw - 1`` additions and one division per output element; MACs: 0.

VJP: ``dx = avg_pool2d_grad(dy)`` (:mod:`cnncc.ops.avg_pool2d_grad`): each ``dy`` divided by its window's divisor
(the same :func:`divisors`) and spread over the window's input cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType, image_type
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register
from cnncc.ops.window import check_flag, output_size, pad_to_windows, pool_output, windows

_NO_DILATION = (1, 1)


@dataclass(frozen=True)
class AvgPool2dAttrs:
    """Attributes of ``avg_pool2d``; ``padding`` is explicit ``(top, bottom, left, right)``."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True


def _infer(types: Sequence[TensorType], a: AvgPool2dAttrs, where: Where) -> Sequence[TensorType]:
    x = types[0]
    oh, ow = pool_output(x, a.kernel, a.stride, a.padding, _NO_DILATION, a.ceil_mode, where)
    check_flag("count_include_pad", a.count_include_pad, where)
    return (image_type((x.shape[0], x.shape[1], oh, ow), x.dtype),)


def _window_sums(x: np.ndarray, padding: tuple[int, int, int, int], a: AvgPool2dAttrs,
                 out_hw: tuple[int, int]) -> np.ndarray:
    """Sum of every window of ``x`` zero-padded by ``padding`` (and past the end for ceil-mode windows)."""
    xp = pad_to_windows(x, padding, a.kernel, a.stride, _NO_DILATION, out_hw, 0.0)
    return windows(xp, a.kernel, a.stride, _NO_DILATION, out_hw).sum(axis=(4, 5))


def pooled_size(hw: tuple[int, int], a: AvgPool2dAttrs) -> tuple[int, int]:
    """The output ``(OH, OW)`` for an input plane of size ``hw`` (the attributes already checked)."""
    t, b, l, r = a.padding
    return (output_size(hw[0], a.kernel[0], a.stride[0], t, b, 1, a.ceil_mode),
            output_size(hw[1], a.kernel[1], a.stride[1], l, r, 1, a.ceil_mode))


def divisors(hw: tuple[int, int], a: AvgPool2dAttrs, dtype: np.dtype) -> np.ndarray:
    """Every window's divisor (module docstring), shape ``(1, 1, OH, OW)``: the window sums of a 0/1 mask of the
    counted cells. Shared with ``avg_pool2d_grad``, so the backward divides exactly as the forward."""
    t, b, l, r = a.padding
    counted = np.ones((1, 1, *hw), dtype=dtype)
    if a.count_include_pad:  # the padding cells count: make them part of the mask, pad nothing more
        counted = np.pad(counted, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=1)
    mask_padding = (0, 0, 0, 0) if a.count_include_pad else a.padding
    return _window_sums(counted, mask_padding, a, pooled_size(hw, a))


def _reference(arrays: Sequence[np.ndarray], a: AvgPool2dAttrs) -> np.ndarray:
    x = arrays[0]
    hw = (x.shape[2], x.shape[3])
    return (_window_sums(x, a.padding, a, pooled_size(hw, a)) / divisors(hw, a, x.dtype)).astype(x.dtype, copy=False)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: AvgPool2dAttrs) -> int:
    return outs[0].size * a.kernel[0] * a.kernel[1]


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    from cnncc.ops.avg_pool2d_grad import AvgPool2dGradAttrs

    x = node.inputs[0]
    return [ctx.emit("avg_pool2d_grad", [grads_out[0]], AvgPool2dGradAttrs(node.attrs, (x.shape[2], x.shape[3])))]


OP = register(OpDef(name="avg_pool2d", inputs=("x",), infer=_infer, reference=_reference, attrs=AvgPool2dAttrs,
                    flops=_flops, vjp=_vjp,
                    traits=OpTraits(category=Category.POOL, recomputable=True), doc=__doc__ or ""))
