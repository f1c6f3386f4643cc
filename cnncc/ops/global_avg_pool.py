"""global_avg_pool: the mean of each channel's whole H x W plane, (N, C, H, W) -> (N, C, 1, 1).

Network in Network's global average pooling, "No learnable parameter! Can work with images of different
resolution!" (seed 003 L863-871); the end of GoogLeNet, ResNet, MobileNet (seed 003 L902, L1050, L1118); the SE
"squeeze" ``z_c = 1/(HW) sum_i sum_j u_c(i, j)`` (seed 003 L1264-1266). Same as PyTorch's ``AdaptiveAvgPool2d(1)``.
The output stays rank 4 (NCHW); a flatten follows it in the models.

FLOPs: ``H*W - 1`` additions and one division per (n, c), i.e. ``N*C*H*W``; MACs: 0.

VJP: ``dx = dy / (H*W)`` broadcast over each plane (``multiply`` of a ``1/(H*W)`` fill by ``dy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType, image_type
from cnncc.ops.registry import Category, NoAttrs, OpDef, OpTraits, Where, register
from cnncc.ops.window import require_image


def _infer(types: Sequence[TensorType], a: NoAttrs, where: Where) -> Sequence[TensorType]:
    x = types[0]
    require_image(x, "input", where)
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise where.fail("empty input", f"input spatial size {x.shape[2]}x{x.shape[3]} must be at least 1x1")
    return (image_type((x.shape[0], x.shape[1], 1, 1), x.dtype),)


def _reference(arrays: Sequence[np.ndarray], a: NoAttrs) -> np.ndarray:
    x = arrays[0]
    return np.mean(x, axis=(2, 3), keepdims=True, dtype=x.dtype)


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    x = ctx.value(node.inputs[0])
    return [ctx.emit("multiply", [ctx.fill_like(x, 1.0 / (x.shape[2] * x.shape[3])), dy])]


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: NoAttrs) -> int:
    return ins[0].size


OP = register(OpDef(name="global_avg_pool", inputs=("x",), infer=_infer, reference=_reference, flops=_flops,
                    vjp=_vjp, traits=OpTraits(category=Category.POOL), doc=__doc__ or ""))
