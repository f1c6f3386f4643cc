"""max_pool2d_grad: the gradient of max_pool2d with respect to its input.

For ``y = max_pool2d(x)`` every output gradient ``dy[n, c, i, j]`` goes to the argmax of its window, the *first*
maximum in row-major window order (:func:`cnncc.ops.max_pool2d.max_pool2d_indices`, the tie rule of
:mod:`cnncc.ops.max_pool2d`, which PyTorch's kernels share); every other cell of the window gets 0 from it. Where
windows overlap (stride < kernel) a cell that is the argmax of several windows receives the sum of their
gradients::

    dx[n, c, h, w] = sum_{(i, j) : argmax(n, c, i, j) = (h, w)} dy[n, c, i, j]

A padding cell never wins (it holds ``-inf``), so nothing is routed into the padding.

Operands: ``x`` (the forward input, N, C, H, W) and ``dy`` (N, C, OH, OW, the forward output's shape). Attributes:
the forward's :class:`~cnncc.ops.max_pool2d.MaxPool2dAttrs`. Result ``dx``, x's type. FLOPs: ``kh*kw - 1``
comparisons per window (recomputing the argmax) plus one add per window. No VJP (second derivatives are out of
scope).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.max_pool2d import MaxPool2dAttrs, max_pool2d_indices
from cnncc.ops.operands import require_same_float
from cnncc.ops.registry import BACKWARD, OpDef, Where, register
from cnncc.ops.window import pool_output, require_image


def _infer(types: Sequence[TensorType], a: MaxPool2dAttrs, where: Where) -> Sequence[TensorType]:
    x, dy = types
    require_image(dy, "dy", where)
    require_same_float(types, ("x", "dy"), where)
    oh, ow = pool_output(x, a.kernel, a.stride, a.padding, a.dilation, a.ceil_mode, where)
    want = (x.shape[0], x.shape[1], oh, ow)
    if dy.shape != want:
        raise where.fail("dy shape", f"dy has shape {dy.shape} but max_pool2d of x {x.shape} with kernel {a.kernel}, "
                                     f"stride {a.stride}, padding {a.padding} gives {want}")
    return (x,)


def _reference(arrays: Sequence[np.ndarray], a: MaxPool2dAttrs) -> np.ndarray:
    x = arrays[0]
    dy = np.asarray(arrays[1], dtype=x.dtype)
    n, c, h, w = x.shape
    idx = max_pool2d_indices(x, a).reshape(n * c, -1)  # flat h * W + w per window
    flat = idx + (np.arange(n * c, dtype=np.int64) * (h * w)).reshape(-1, 1)
    dx = np.zeros(n * c * h * w, dtype=x.dtype)
    np.add.at(dx, flat.ravel(), dy.reshape(-1))
    return dx.reshape(x.shape)


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: MaxPool2dAttrs) -> int:
    return ins[1].size * a.kernel[0] * a.kernel[1]


OP = register(OpDef(name="max_pool2d_grad", inputs=("x", "dy"), infer=_infer, reference=_reference,
                    attrs=MaxPool2dAttrs, flops=_flops, traits=BACKWARD, doc=__doc__ or ""))
