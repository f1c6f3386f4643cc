"""dropout: zero each element with probability ``p`` during training; the identity at inference.

``p`` is the probability of **dropping** a unit (PyTorch's and Keras's ``p``/``rate``). Seed 003 L500-543 is
ambiguous: its pmf gives ``P(X_i = 1) = p`` while its text says ``P(X_i = 0) = p`` and keeps units with
probability ``q``; here ``q = 1 − p`` is the keep probability. cnncc implements **inverted dropout** (seed 003
L535-543): training ``y = x · mask / (1 − p)``, inference ``y = x``, so inference needs no rescaling.

The mask comes from a counter-based generator and is reproducible for a fixed ``seed``, independent of the run
dtype: ``mask = numpy.random.Generator(numpy.random.Philox(key=seed)).random(x.shape) >= p`` (uniforms in
[0, 1), drawn in float64, in row-major order of ``x``). A fixed seed gives the same mask at every call; the
training step varies ``seed`` per step.

VJP: the identity at inference; in training ``dx = dy · mask / (1 − p)``, which is ``dropout(dy)`` with the same
attributes, since the mask depends only on the shape, ``p`` and ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import TensorType
from cnncc.ops.operands import require_float
from cnncc.ops.registry import OpDef, Where, register


@dataclass(frozen=True)
class DropoutAttrs:
    """``p``: drop probability, ``0 <= p < 1``; ``training``: apply the mask; ``seed``: Philox key (>= 0)."""

    p: float = 0.5
    training: bool = False
    seed: int = 0


def _infer(types: Sequence[TensorType], a: DropoutAttrs, where: Where) -> Sequence[TensorType]:
    require_float(types[0], "x", where)
    if not 0.0 <= a.p < 1.0:
        raise where.fail("drop probability", f"p = {a.p} is the probability of dropping a unit and must "
                                             "satisfy 0 <= p < 1")
    if not isinstance(a.training, bool):
        raise where.fail("training", f"training must be a bool, got {a.training!r}")
    if isinstance(a.seed, bool) or not isinstance(a.seed, int) or a.seed < 0:
        raise where.fail("seed", f"seed must be an int >= 0, got {a.seed!r}")
    return (types[0],)


def keep_mask(shape: tuple[int, ...], p: float, seed: int) -> np.ndarray:
    """The boolean mask of kept elements: ``Philox(key=seed)`` uniforms ``>= p``."""
    return np.random.Generator(np.random.Philox(key=seed)).random(shape) >= p


def _reference(arrays: Sequence[np.ndarray], a: DropoutAttrs) -> np.ndarray:
    x = arrays[0]
    if not a.training:
        return x.copy()
    scale = x.dtype.type(1.0 / (1.0 - a.p))
    return np.where(keep_mask(x.shape, a.p, a.seed), x * scale, x.dtype.type(0))


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    return [ctx.emit("dropout", [dy], node.attrs) if node.attrs.training else dy]


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: DropoutAttrs) -> int:
    return 2 * outs[0].size if a.training else 0


OP = register(OpDef(name="dropout", inputs=("x",), infer=_infer, reference=_reference, attrs=DropoutAttrs,
                    flops=_flops, vjp=_vjp, doc=__doc__ or ""))
