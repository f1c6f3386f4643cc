"""max_pool2d: the maximum of each (strided, optionally dilated) kernel window of an NCHW image, per channel.

    y[n, c, i, j] = max_{r, s} x_pad[n, c, i*sh + r*dh, j*sw + s*dw]

Seed 001 L1528-1696 (decoded, for stride = kernel): ``U(i,j) = max_{k in [(i-1)D+1, iD], l in [(j-1)D+1, jD]} Y(k,l)``;
overlapping windows (stride < kernel): AlexNet 3x3/2 (seed 001 L2532), seed 000 L617-627 (2x2 stride 1). It "does
not affect the depth dimension" (seed 000 L577-582). Worked examples: TV-29..TV-33 of the seeds digest.

Padding cells hold ``-inf``, so they never win. Each pad is at most half the kernel (PyTorch's rule), hence every
window holds at least one input cell. ``ceil_mode`` follows PyTorch (see :mod:`cnncc.ops.window`): a partial last
window only looks at the cells it covers.

**Tie rule.** When several cells of a window hold the maximum, the *first in row-major window order* (smallest
``r``, then smallest ``s``) is the argmax -- the cell that receives the gradient in the backward pass (seed 001
L2209-2302: "Derivative w.r.t the Y terms that did not contribute to the maxout map is 0"; the seeds leave ties
open). PyTorch's CPU kernel makes the same choice (it replaces the running max only on a strictly greater value).
:func:`max_pool2d_indices` returns these argmax positions. A NaN in a window makes the output NaN (numpy and PyTorch
agree); its index is then the first NaN of the window.

FLOPs: ``kh*kw - 1`` comparisons per output element; MACs: 0.

VJP: ``dx = max_pool2d_grad(x, dy)`` with the same attributes: each output gradient goes to its window's first
maximum (the tie rule above), summed where overlapping windows share an argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType, image_type
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register
from cnncc.ops.window import output_size, pad_to_windows, pool_output, windows


@dataclass(frozen=True)
class MaxPool2dAttrs:
    """Attributes of ``max_pool2d``; ``padding`` is explicit ``(top, bottom, left, right)``."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False


def _infer(types: Sequence[TensorType], a: MaxPool2dAttrs, where: Where) -> Sequence[TensorType]:
    x = types[0]
    oh, ow = pool_output(x, a.kernel, a.stride, a.padding, a.dilation, a.ceil_mode, where)
    return (image_type((x.shape[0], x.shape[1], oh, ow), x.dtype),)


def _out_hw(x: np.ndarray, a: MaxPool2dAttrs) -> tuple[int, int]:
    t, b, l, r = a.padding
    return (output_size(x.shape[2], a.kernel[0], a.stride[0], t, b, a.dilation[0], a.ceil_mode),
            output_size(x.shape[3], a.kernel[1], a.stride[1], l, r, a.dilation[1], a.ceil_mode))


def _windows(x: np.ndarray, a: MaxPool2dAttrs) -> np.ndarray:
    """Windows ``(N, C, OH, OW, kh, kw)`` of ``x`` padded with ``-inf`` (also past the end in ceil mode)."""
    out_hw = _out_hw(x, a)
    xp = pad_to_windows(x, a.padding, a.kernel, a.stride, a.dilation, out_hw, -np.inf)
    return windows(xp, a.kernel, a.stride, a.dilation, out_hw)


def _reference(arrays: Sequence[np.ndarray], a: MaxPool2dAttrs) -> np.ndarray:
    return _windows(arrays[0], a).max(axis=(4, 5))


def max_pool2d_indices(x: np.ndarray, a: MaxPool2dAttrs) -> np.ndarray:
    """Argmax of every window as a flat index ``h * W + w`` into the unpadded (H, W) plane, like PyTorch's
    ``return_indices``; ties go to the first maximum in row-major window order (module docstring)."""
    win = _windows(x, a)
    n, c, oh, ow, kh, kw = win.shape
    first = np.argmax(win.reshape(n, c, oh, ow, kh * kw), axis=-1)
    r, s = np.divmod(first, kw)
    rows = np.arange(oh).reshape(oh, 1) * a.stride[0] - a.padding[0] + r * a.dilation[0]
    cols = np.arange(ow).reshape(1, ow) * a.stride[1] - a.padding[2] + s * a.dilation[1]
    return (rows * x.shape[3] + cols).astype(np.int64)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: MaxPool2dAttrs) -> int:
    return outs[0].size * (a.kernel[0] * a.kernel[1] - 1)


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    return [ctx.emit("max_pool2d_grad", [ctx.value(node.inputs[0]), grads_out[0]], node.attrs)]


OP = register(OpDef(name="max_pool2d", inputs=("x",), infer=_infer, reference=_reference, attrs=MaxPool2dAttrs,
                    flops=_flops, vjp=_vjp,
                    traits=OpTraits(category=Category.POOL, recomputable=True), doc=__doc__ or ""))
